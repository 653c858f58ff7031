//! The RFC 9162 Merkle tree: roots, inclusion proofs and consistency proofs.
//!
//! Storage stays outside this module. A tree is addressed by its *complete
//! subtrees*: [`NodeId`] `(level, index)` covers the leaves
//! `[index·2^level, (index+1)·2^level)`. Every hash a proof needs is either such
//! a node or a ragged right edge built from O(log n) of them, so proof
//! generation takes a `get` function that fetches complete nodes, and a store
//! that keeps them answers any proof with O(log n) reads.
//!
//! [`Frontier`] is the right edge of a growing tree (a "compact range"): the
//! roots of the maximal complete subtrees of `[0, size)`. Appending a leaf
//! updates it in O(1) amortised hashes and reports the nodes it completed, which
//! is what a store persists.

use crate::hash::{Hash, empty_root, node_hash};

/// A complete subtree: the leaves `[index << level, (index + 1) << level)`.
/// Level 0 is a leaf hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The height above the leaves.
    pub level: u8,
    /// The position among the nodes of this level, from the left.
    pub index: u64,
}

/// A proof was asked for sizes or indexes that do not describe one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofRangeError {
    /// An inclusion proof for an index at or beyond the tree size.
    #[error("index {index} is not in a tree of size {size}")]
    IndexBeyondSize {
        /// The leaf asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("cannot prove consistency from size {from} to the smaller size {to}")]
    SizesReversed {
        /// The older tree size.
        from: u64,
        /// The newer tree size.
        to: u64,
    },
}

/// Why a proof could not be produced: a bad request, or the node source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError<E> {
    /// The sizes or index do not describe a proof.
    #[error(transparent)]
    Range(#[from] ProofRangeError),
    /// The node source failed (a store read, a missing node).
    #[error("reading a tree node: {0}")]
    Source(E),
}

/// The largest power of two strictly less than `n` (RFC 9162 §2.1.1's `k`).
/// Callers guarantee `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of the leaves `[start, end)` as RFC 9162's `MTH(D[start:end])`,
/// reading only complete subtrees through `get`. `start < end`.
pub fn subtree_hash<E>(start: u64, end: u64, get: &mut impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E> {
    debug_assert!(start < end);
    let width = end - start;
    if width.is_power_of_two() && start.is_multiple_of(width) {
        let level = width.trailing_zeros();
        return get(NodeId { level: level as u8, index: start >> level });
    }
    // A ragged range: its left part is complete, its right part recurses.
    // Ranges that come from RFC 9162's recursion are aligned, so the depth of
    // this recursion is at most log2(width).
    let k = split_point(width);
    let left = subtree_hash(start, start + k, get)?;
    let right = subtree_hash(start + k, end, get)?;
    Ok(node_hash(&left, &right))
}

/// The root of a tree of `size` leaves (RFC 9162 §2.1.1); the empty tree's
/// root is the SHA-256 of nothing.
pub fn root<E>(size: u64, get: &mut impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Hash, E> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree_hash(0, size, get)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves, leaf's
/// sibling first (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<E>(
    index: u64,
    size: u64,
    get: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProveError<E>> {
    if index >= size {
        return Err(ProofRangeError::IndexBeyondSize { index, size }.into());
    }
    let mut proof = Vec::with_capacity(64);
    let (mut start, mut end) = (0, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index < start + k {
            proof.push(subtree_hash(start + k, end, get).map_err(ProveError::Source)?);
            end = start + k;
        } else {
            proof.push(subtree_hash(start, start + k, get).map_err(ProveError::Source)?);
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the trees of `from` and `to` leaves
/// (RFC 9162 §2.1.4.1). It is empty when `from` is 0 or equals `to`.
pub fn consistency_proof<E>(
    from: u64,
    to: u64,
    get: &mut impl FnMut(NodeId) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProveError<E>> {
    if from > to {
        return Err(ProofRangeError::SizesReversed { from, to }.into());
    }
    let mut proof = Vec::with_capacity(64);
    if from == 0 || from == to {
        return Ok(proof);
    }
    // SUBPROOF(m, D[start:end], whole_old_tree), unrolled.
    let (mut start, mut end, mut m, mut whole_old_tree) = (0, to, from, true);
    loop {
        if m == end - start {
            if !whole_old_tree {
                proof.push(subtree_hash(start, end, get).map_err(ProveError::Source)?);
            }
            break;
        }
        let k = split_point(end - start);
        if m <= k {
            proof.push(subtree_hash(start + k, end, get).map_err(ProveError::Source)?);
            end = start + k;
        } else {
            proof.push(subtree_hash(start, start + k, get).map_err(ProveError::Source)?);
            start += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root is
/// `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Checks that the tree of `from` leaves with root `from_root` is a prefix of
/// the tree of `to` leaves with root `to_root` (RFC 9162 §2.1.4.2). The empty
/// tree is a prefix of every tree.
pub fn verify_consistency(from: u64, to: u64, from_root: &Hash, to_root: &Hash, proof: &[Hash]) -> bool {
    if from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        return proof.is_empty();
    }
    let mut path = proof.iter();
    let first = if from.is_power_of_two() {
        *from_root
    } else {
        match path.next() {
            Some(hash) => *hash,
            None => return false,
        }
    };
    let (mut fn_, mut sn) = (from - 1, to - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *from_root && sr == *to_root && sn == 0
}

/// The right edge of a growing tree: the roots of the maximal complete
/// subtrees of `[0, size)`, largest (leftmost) first. One per set bit of
/// `size`, so at most 64 hashes describe a tree of any size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// A frontier whose hash count does not match its size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} has {expected} nodes, not {found}")]
pub struct FrontierError {
    /// The tree size.
    pub size: u64,
    /// The number of set bits in `size`.
    pub expected: u32,
    /// The number given.
    pub found: usize,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds a frontier from stored nodes, largest first.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Result<Frontier, FrontierError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(FrontierError { size, expected: size.count_ones(), found: nodes.len() });
        }
        Ok(Frontier { size, nodes })
    }

    /// Reads the frontier of a tree of `size` leaves from its complete nodes.
    pub fn load<E>(size: u64, get: &mut impl FnMut(NodeId) -> Result<Hash, E>) -> Result<Frontier, E> {
        let nodes = Frontier::node_ids(size).map(get).collect::<Result<Vec<_>, E>>()?;
        Ok(Frontier { size, nodes })
    }

    /// The complete subtrees that make up `[0, size)`, largest first.
    pub fn node_ids(size: u64) -> impl Iterator<Item = NodeId> {
        (0..64u8)
            .rev()
            .filter(move |level| size >> level & 1 == 1)
            .map(move |level| NodeId { level, index: (size >> level) - 1 })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete-subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf. `completed` is told of every complete subtree this leaf
    /// finishes, the leaf itself first, so that a store can persist them.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(NodeId, Hash)) {
        let index = self.size;
        completed(NodeId { level: 0, index }, leaf);
        let mut hash = leaf;
        // INVARIANT (frontier-shape): the trailing one bits of `size` are the
        // frontier's smallest nodes; each merges with the new node in turn.
        for level in 1..=index.trailing_ones() {
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            completed(NodeId { level: level as u8, index: ((index + 1) >> level) - 1 }, hash);
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The tree's root (RFC 9162 §2.1.1).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else { return empty_root() };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A whole tree held in memory, every complete node kept: for tests, tools and
/// small logs. Stores use the same [`NodeId`] addressing on disk.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is node `(l, i)`.
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

/// A node that a tree does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tree node at level {} index {} is missing", .0.level, .0.index)]
pub struct MissingNode(pub NodeId);

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.push(leaf, |id, hash| {
            let level = usize::from(id.level);
            if levels.len() <= level {
                levels.resize_with(level + 1, Vec::new);
            }
            if let Some(row) = levels.get_mut(level) {
                row.push(hash);
            }
        });
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MissingNode> {
        root(size, &mut |id| self.node(id))
    }

    /// A complete node.
    pub fn node(&self, id: NodeId) -> Result<Hash, MissingNode> {
        self.levels
            .get(usize::from(id.level))
            .and_then(|row| row.get(usize::try_from(id.index).ok()?))
            .copied()
            .ok_or(MissingNode(id))
    }

    /// The inclusion proof of `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProveError<MissingNode>> {
        inclusion_proof(index, size, &mut |id| self.node(id))
    }

    /// The consistency proof from `from` to `to` leaves.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProveError<MissingNode>> {
        consistency_proof(from, to, &mut |id| self.node(id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    /// RFC 6962's test leaves (also used by RFC 9162 implementations).
    const LEAVES_HEX: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

    /// The published roots of the first 1..=8 leaves.
    const ROOTS_HEX: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    fn rfc_leaves() -> Vec<Hash> {
        LEAVES_HEX.iter().map(|hex| leaf_hash(&unhex(hex))).collect()
    }

    fn tree_of(leaves: &[Hash]) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for leaf in leaves {
            tree.push(*leaf);
        }
        tree
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    // A plain transcription of RFC 9162 §2.1 to check the unrolled code against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut path = reference_path(m, &leaves[..k]);
            path.push(reference_root(&leaves[k..]));
            path
        } else {
            let mut path = reference_path(m - k, &leaves[k..]);
            path.push(reference_root(&leaves[..k]));
            path
        }
    }

    fn reference_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { vec![] } else { vec![reference_root(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut proof = reference_subproof(m, &leaves[..k], whole);
            proof.push(reference_root(&leaves[k..]));
            proof
        } else {
            let mut proof = reference_subproof(m - k, &leaves[k..], false);
            proof.push(reference_root(&leaves[..k]));
            proof
        }
    }

    #[test]
    fn rfc6962_roots_for_0_to_8_leaves() {
        let leaves = rfc_leaves();
        assert_eq!(tree_of(&[]).root(), empty_root());
        for n in 1..=8 {
            let tree = tree_of(&leaves[..n]);
            assert_eq!(tree.root().to_hex(), ROOTS_HEX[n - 1], "root of {n} leaves");
            assert_eq!(reference_root(&leaves[..n]).to_hex(), ROOTS_HEX[n - 1]);
        }
    }

    #[test]
    fn every_proof_up_to_64_leaves_matches_the_reference_and_verifies() {
        let all = leaves(64);
        let tree = tree_of(&all);
        for size in 1..=64u64 {
            let prefix = &all[..size as usize];
            let root = tree.root_at(size).unwrap();
            assert_eq!(root, reference_root(prefix));
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                assert_eq!(proof, reference_path(index as usize, prefix), "path {index} in {size}");
                assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root));
                // The same proof must not verify another leaf or position.
                let other = (index + 1) % size;
                if other != index {
                    assert!(!verify_inclusion(other, size, &all[index as usize], &proof, &root));
                    assert!(!verify_inclusion(index, size, &all[other as usize], &proof, &root));
                }
            }
            for from in 1..=size {
                let proof = tree.consistency_proof(from, size).unwrap();
                assert_eq!(proof, reference_subproof(from as usize, prefix, true), "{from}->{size}");
                let from_root = tree.root_at(from).unwrap();
                assert!(verify_consistency(from, size, &from_root, &root, &proof), "{from}->{size}");
                if from < size {
                    let wrong = leaf_hash(b"not the old root");
                    assert!(!verify_consistency(from, size, &wrong, &root, &proof));
                    assert!(!verify_consistency(from, size, &from_root, &wrong, &proof));
                }
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let tree = tree_of(&leaves(5));
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(ProveError::Range(ProofRangeError::IndexBeyondSize { index: 5, size: 5 }))
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(ProveError::Range(ProofRangeError::SizesReversed { from: 4, to: 3 }))
        );
        assert_eq!(tree.consistency_proof(0, 5), Ok(vec![]));
        assert!(!verify_inclusion(0, 0, &leaves(1)[0], &[], &empty_root()));
    }

    #[test]
    fn frontier_reports_every_completed_node_once() {
        let mut frontier = Frontier::new();
        let mut seen = Vec::new();
        for leaf in leaves(8) {
            frontier.push(leaf, |id, _| seen.push(id));
        }
        // 8 leaves + 4 + 2 + 1 interior nodes.
        assert_eq!(seen.len(), 15);
        assert!(seen.contains(&NodeId { level: 3, index: 0 }));
        assert_eq!(
            Frontier::node_ids(13).collect::<Vec<_>>(),
            vec![NodeId { level: 3, index: 0 }, NodeId { level: 2, index: 2 }, NodeId { level: 0, index: 12 },]
        );
        assert!(Frontier::from_nodes(3, vec![Hash::ZERO]).is_err());
    }

    proptest! {
        #[test]
        fn proofs_verify_for_random_sizes(size in 1u64..3000, index_seed: u64, from_seed: u64) {
            let all = leaves(size);
            let tree = tree_of(&all);
            let index = index_seed % size;
            let from = from_seed % (size + 1);
            let root = tree.root();
            prop_assert_eq!(root, tree.root_at(size).unwrap());
            let loaded = Frontier::load(size, &mut |id| tree.node(id)).unwrap();
            prop_assert_eq!(loaded.root(), root);
            let proof = tree.inclusion_proof(index, size).unwrap();
            prop_assert!(proof.len() <= 64);
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root));
            let proof = tree.consistency_proof(from, size).unwrap();
            let from_root = tree.root_at(from).unwrap();
            prop_assert!(verify_consistency(from, size, &from_root, &root, &proof));
        }
    }
}
