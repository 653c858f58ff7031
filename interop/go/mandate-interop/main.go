// Command mandate-interop checks Mandate's logs against an independent
// implementation: Go's golang.org/x/mod/sumdb/tlog (RFC 6962/9162 Merkle
// proofs) and golang.org/x/mod/sumdb/note (C2SP signed notes), the code
// behind the Go checksum database. It is driven by
// crates/mandate-log/tests/go_interop.rs.
//
// It builds offline in GOPATH mode against the Debian packages golang-go and
// golang-golang-x-mod-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build
//
// Usage:
//
//	mandate-interop verify CASES.json
//	mandate-interop sign SIGNER_KEY TEXT_FILE
//	mandate-interop keygen NAME
//	mandate-interop log VERIFIER_KEY CHECKPOINT ENTRIES.jsonl
package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// cases is the file Mandate writes. Hashes are tlog.Hash, whose JSON form is
// standard base64, the same spelling as Mandate's checkpoints and proofs.
type cases struct {
	VerifierKey string            `json:"verifier_key"`
	Checkpoints []checkpointCase  `json:"checkpoints"`
	Inclusion   []inclusionCase   `json:"inclusion"`
	Consistency []consistencyCase `json:"consistency"`
}

// Valid says what Mandate expects: true must verify, false must be rejected.
type checkpointCase struct {
	Name  string `json:"name"`
	Note  string `json:"note"`
	Valid bool   `json:"valid"`
}

type inclusionCase struct {
	Name     string           `json:"name"`
	Entry    string           `json:"entry"` // the canonical entry bytes
	LeafHash tlog.Hash        `json:"leaf_hash"`
	Index    int64            `json:"index"`
	Size     int64            `json:"size"`
	Root     tlog.Hash        `json:"root"`
	Proof    tlog.RecordProof `json:"proof"`
	Valid    bool             `json:"valid"`
}

type consistencyCase struct {
	Name    string         `json:"name"`
	From    int64          `json:"from"`
	To      int64          `json:"to"`
	OldRoot tlog.Hash      `json:"old_root"`
	NewRoot tlog.Hash      `json:"new_root"`
	Proof   tlog.TreeProof `json:"proof"`
	Valid   bool           `json:"valid"`
}

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) == 2 && args[0] == "verify":
		err = verify(args[1])
	case len(args) == 3 && args[0] == "sign":
		err = sign(args[1], args[2])
	case len(args) == 2 && args[0] == "keygen":
		err = keygen(args[1])
	case len(args) == 4 && args[0] == "log":
		err = verifyLog(args[1], args[2], args[3])
	default:
		err = errors.New("usage: mandate-interop verify CASES.json | sign SIGNER_KEY TEXT_FILE | keygen NAME | log VERIFIER_KEY CHECKPOINT ENTRIES.jsonl")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mandate-interop:", err)
		os.Exit(1)
	}
}

func verify(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c cases
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	verifier, err := note.NewVerifier(c.VerifierKey)
	if err != nil {
		return fmt.Errorf("verifier key: %v", err)
	}
	known := note.VerifierList(verifier)

	failures := 0
	report := func(name string, valid bool, err error) {
		switch {
		case valid && err == nil:
			fmt.Printf("ok %s\n", name)
		case !valid && err != nil:
			fmt.Printf("ok %s (rejected: %v)\n", name, err)
		case valid:
			failures++
			fmt.Printf("FAIL %s: %v\n", name, err)
		default:
			failures++
			fmt.Printf("FAIL %s: accepted, but it must be rejected\n", name)
		}
	}

	// A proof is only worth the root it leads to, so proofs are checked
	// against roots from checkpoints that verified here, never against
	// roots merely stated in the cases file.
	verified := map[int64]tlog.Hash{}
	for _, k := range c.Checkpoints {
		size, root, err := openCheckpoint(k.Note, known, verifier.Name())
		if err == nil {
			if other, ok := verified[size]; ok && other != root {
				err = fmt.Errorf("a second root for size %d: the log forked", size)
			}
		}
		// Only checkpoints meant to verify may vouch for roots, so that a
		// negative case that wrongly passes cannot also make proofs pass.
		if err == nil && k.Valid {
			verified[size] = root
		}
		report(k.Name, k.Valid, err)
	}
	anchor := func(size int64, root tlog.Hash) error {
		signed, ok := verified[size]
		switch {
		case !ok:
			return fmt.Errorf("no verified checkpoint of size %d", size)
		case signed != root:
			return fmt.Errorf("root %v is not the verified root %v of size %d", root, signed, size)
		}
		return nil
	}

	for _, p := range c.Inclusion {
		err := anchor(p.Size, p.Root)
		if err == nil && tlog.RecordHash([]byte(p.Entry)) != p.LeafHash {
			err = fmt.Errorf("record hash %v of the entry is not the leaf hash %v", tlog.RecordHash([]byte(p.Entry)), p.LeafHash)
		}
		if err == nil {
			// CheckRecord(proof, tree size, tree hash, record index, record hash).
			err = tlog.CheckRecord(p.Proof, p.Size, p.Root, p.Index, p.LeafHash)
		}
		report(p.Name, p.Valid, err)
	}

	for _, p := range c.Consistency {
		err := anchor(p.From, p.OldRoot)
		if err == nil {
			err = anchor(p.To, p.NewRoot)
		}
		if err == nil {
			// CheckTree(proof, new size, new hash, old size, old hash).
			err = tlog.CheckTree(p.Proof, p.To, p.NewRoot, p.From, p.OldRoot)
		}
		report(p.Name, p.Valid, err)
	}

	total := len(c.Checkpoints) + len(c.Inclusion) + len(c.Consistency)
	fmt.Fprintf(os.Stderr, "mandate-interop: %d cases, %d failures\n", total, failures)
	if failures > 0 {
		return fmt.Errorf("%d of %d cases failed", failures, total)
	}
	return nil
}

// openCheckpoint verifies a c2sp.org/tlog-checkpoint note and returns its
// tree size and root. tlog.ParseTree reads only the older "go.sum database
// tree" header, so the origin/size/root lines are parsed here.
func openCheckpoint(msg string, known note.Verifiers, keyName string) (int64, tlog.Hash, error) {
	n, err := note.Open([]byte(msg), known)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	// Extension lines may follow the root; C2SP lets verifiers ignore them.
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return 0, tlog.Hash{}, errors.New("checkpoint: expected origin, size and root lines")
	}
	origin, sizeText, rootText := lines[0], lines[1], lines[2]
	// A log key signs for one origin; a note it signed for another origin
	// is not this log's checkpoint.
	if origin != keyName {
		return 0, tlog.Hash{}, fmt.Errorf("checkpoint origin %q is not the key name %q", origin, keyName)
	}
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeText {
		return 0, tlog.Hash{}, fmt.Errorf("checkpoint size %q is not a canonical decimal", sizeText)
	}
	root, err := tlog.ParseHash(rootText)
	if err != nil {
		return 0, tlog.Hash{}, fmt.Errorf("checkpoint root %q: %v", rootText, err)
	}
	return size, root, nil
}

func sign(signerKey, textPath string) error {
	text, err := os.ReadFile(textPath)
	if err != nil {
		return err
	}
	signer, err := note.NewSigner(strings.TrimSpace(signerKey))
	if err != nil {
		return fmt.Errorf("signer key: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(text)}, signer)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(msg)
	return err
}

func keygen(name string) error {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return err
	}
	fmt.Println(skey)
	fmt.Println(vkey)
	return nil
}

// verifyLog checks an exported log against its signed checkpoint: every line
// of ENTRIES.jsonl is one record (its bytes without the newline), and the
// Merkle tree hash of all of them, computed by tlog, must be the root the
// checkpoint signs. It prints the size and root on success.
func verifyLog(verifierKey, checkpointPath, entriesPath string) error {
	verifier, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		return fmt.Errorf("verifier key: %v", err)
	}
	checkpoint, err := os.ReadFile(checkpointPath)
	if err != nil {
		return err
	}
	size, root, err := openCheckpoint(string(checkpoint), note.VerifierList(verifier), verifier.Name())
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	data, err := os.ReadFile(entriesPath)
	if err != nil {
		return err
	}
	text := string(data)
	if text != "" && !strings.HasSuffix(text, "\n") {
		return errors.New("entries: the last line has no newline")
	}
	records := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if text == "" {
		records = nil
	}
	if int64(len(records)) != size {
		return fmt.Errorf("entries: %d records, the checkpoint signs %d", len(records), size)
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, index := range indexes {
			out[i] = stored[index]
		}
		return out, nil
	})
	for i, record := range records {
		hashes, err := tlog.StoredHashes(int64(i), []byte(record), reader)
		if err != nil {
			return err
		}
		stored = append(stored, hashes...)
	}
	computed, err := tlog.TreeHash(size, reader)
	if err != nil {
		return err
	}
	if computed != root {
		return fmt.Errorf("the entries' tree hash %v is not the checkpoint's root %v", computed, root)
	}
	fmt.Printf("%d %v\n", size, root)
	return nil
}
