//! One keep-alive HTTP/1.1 connection to a Mandate server (hyper's client
//! connection, no pool): what `mandate bench` and the peer workload example
//! drive their requests through.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use serde_json::Value;

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    pub async fn open(addr: &str) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("starting HTTP/1.1")?;
        tokio::spawn(connection);
        Ok(Connection { sender, host: addr.to_owned() })
    }

    /// Sends one request and reads the whole answer: its status and body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let bytes = match body {
            Some(body) => Bytes::from(serde_json::to_vec(body)?),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {key}"));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        self.sender.ready().await.context("the connection closed")?;
        let response = self
            .sender
            .send_request(request.body(Full::new(bytes))?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.context("reading the answer")?.to_bytes();
        Ok((status, bytes))
    }
}

impl Connection {
    /// [`Connection::call`] with a JSON body, its answer parsed as JSON
    /// (`null` when it is not).
    pub async fn call_json(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, bytes) = self.call(method, path, key, Some(body)).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}
