//! A small blocking HTTP/1.1 client over a Unix domain socket.
//!
//! couicctl's local mode and the test suites speak to the daemon through it.
//! It keeps one connection alive and reconnects once if the daemon closed it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct UdsClient {
    path: PathBuf,
    timeout: Duration,
    conn: Option<BufReader<UnixStream>>,
}

impl UdsClient {
    pub fn new(path: impl AsRef<Path>, timeout: Duration) -> Self {
        UdsClient {
            path: path.as_ref().to_path_buf(),
            timeout,
            conn: None,
        }
    }

    /// Sends one request. `headers` are added to `Host` and `Content-Length`.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or(&[]);
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");

        let reused = self.conn.is_some();
        match self.exchange(method, head.as_bytes(), body) {
            Ok(resp) => Ok(resp),
            // A kept-alive connection may have been closed by the server
            // between requests: retry once on a fresh one.
            Err(_) if reused => {
                self.conn = None;
                self.exchange(method, head.as_bytes(), body)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self, method: &str, head: &[u8], body: &[u8]) -> io::Result<Response> {
        if self.conn.is_none() {
            let stream = UnixStream::connect(&self.path)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let stream = conn.get_mut();
        stream.write_all(head)?;
        stream.write_all(body)?;
        let result = read_response(conn, method == "HEAD");
        match &result {
            Ok(resp)
                if resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close")) =>
            {
                self.conn = None
            }
            Err(_) => self.conn = None,
            _ => {}
        }
        result
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_response(r: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = read_chunked(r)?;
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(r)?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line(r)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let resp = read_response(&mut &raw[..], false).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));

        let raw = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let resp = read_response(&mut &raw[..], false).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (201, "abcde"));

        let raw = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(read_response(&mut &raw[..], false).unwrap().body.is_empty());
        assert!(read_response(&mut &b"garbage\r\n\r\n"[..], false).is_err());
    }
}
