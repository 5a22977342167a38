//! A chunk's hash computed from a binary COPY stream: the source's side from the stream the copy
//! already carries (so the source is not read a second time), and during an apply the target's
//! side from the same query run on the target. Each row's fields become the exact bytes
//! `record_send(ROW(...))` makes of them in the database — the number of columns compared, then
//! per column its type's OID, its length (-1 for NULL) and its binary value. A keyed table's
//! chunk arrives in key order and its rows' bytes are hashed as one sequence with SHA-256; a
//! table without a key has no order, so each row is hashed and the row hashes are sorted and
//! hashed again — exactly as `sql::range_hash` does on the server. `ferry migrate verify`
//! recomputes both sides in the databases.

use sha2::{Digest, Sha256};

/// `PGCOPY\n\377\r\n\0`: the binary COPY signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The digest of rows without an order: their hashes sorted (in place), concatenated and hashed.
pub fn multiset_digest(hashes: &mut [[u8; 32]]) -> String {
    hashes.sort_unstable();
    let mut h = Sha256::new();
    for r in hashes.iter() {
        h.update(r);
    }
    hex::encode(h.finalize())
}

/// Parses a binary COPY stream fed in pieces of any size and hashes its rows.
#[derive(Debug)]
pub struct CopyHasher {
    /// Per field of a row: the type OID of a compared column, or `None` for a column the rules
    /// leave out.
    fields: Vec<Option<u32>>,
    buf: Vec<u8>,
    pos: usize,
    header_done: bool,
    ended: bool,
    /// Rows in key order: one running hash over every row's bytes.
    ordered: Option<Sha256>,
    /// Rows without an order: each row's hash, sorted at the end.
    hashes: Vec<[u8; 32]>,
    rows: i64,
    row: Vec<u8>,
}

impl CopyHasher {
    /// `ordered`: the stream holds a keyed table's rows in key order (`sql::copy_out` sorts
    /// them so), hashed as one sequence; otherwise as a multiset.
    pub fn new(fields: Vec<Option<u32>>, ordered: bool) -> Self {
        Self {
            fields,
            buf: Vec::new(),
            pos: 0,
            header_done: false,
            ended: false,
            ordered: ordered.then(Sha256::new),
            hashes: Vec::new(),
            rows: 0,
            row: Vec::new(),
        }
    }

    /// More bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        while self.step()? {}
        if self.pos > 1 << 16 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(())
    }

    /// Row count and SHA-256 (hex) of the chunk, once the stream has ended.
    pub fn finish(self) -> Result<(i64, String), String> {
        self.finish_rows().map(|(rows, digest, _)| (rows, digest))
    }

    /// As [`Self::finish`], with each row's hash (sorted) for a stream hashed as a multiset
    /// (none for one in key order): a table without a key copied in several chunks is one
    /// multiset across them.
    pub fn finish_rows(mut self) -> Result<(i64, String, Vec<[u8; 32]>), String> {
        if !self.ended {
            return Err("the COPY stream ended without its trailer".into());
        }
        let digest = match self.ordered.take() {
            Some(h) => hex::encode(h.finalize()),
            None => multiset_digest(&mut self.hashes),
        };
        Ok((self.rows, digest, self.hashes))
    }

    fn take(&self, n: usize) -> Option<&[u8]> {
        self.buf.get(self.pos..self.pos + n)
    }

    /// Parses one header or row if it is whole; false when more bytes are needed.
    fn step(&mut self) -> Result<bool, String> {
        if self.ended {
            return Ok(false);
        }
        if !self.header_done {
            let Some(head) = self.take(19) else {
                return Ok(false);
            };
            if &head[..11] != SIGNATURE {
                return Err("not a binary COPY stream".into());
            }
            let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]) as usize;
            if self.take(19 + ext).is_none() {
                return Ok(false);
            }
            self.pos += 19 + ext;
            self.header_done = true;
            return Ok(true);
        }
        let Some(n) = self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            return Ok(false);
        };
        if n == -1 {
            self.pos += 2;
            self.ended = true;
            return Ok(false);
        }
        if n as usize != self.fields.len() {
            return Err(format!(
                "a row of {n} fields, {} expected",
                self.fields.len()
            ));
        }
        self.row_if_whole()
    }

    /// Hashes the row at `pos` when all its fields have arrived.
    fn row_if_whole(&mut self) -> Result<bool, String> {
        let mut at = self.pos + 2;
        let mut spans = Vec::with_capacity(self.fields.len());
        for _ in 0..self.fields.len() {
            let Some(b) = self.buf.get(at..at + 4) else {
                return Ok(false);
            };
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            at += 4;
            if len < 0 {
                spans.push(None);
                continue;
            }
            let end = at + len as usize;
            if self.buf.len() < end {
                return Ok(false);
            }
            spans.push(Some((at, end)));
            at = end;
        }
        self.row.clear();
        let compared = self.fields.iter().filter(|f| f.is_some()).count() as i32;
        self.row.extend_from_slice(&compared.to_be_bytes());
        for (oid, span) in self.fields.iter().zip(&spans) {
            let Some(oid) = oid else { continue };
            self.row.extend_from_slice(&oid.to_be_bytes());
            match span {
                None => self.row.extend_from_slice(&(-1i32).to_be_bytes()),
                Some((a, b)) => {
                    self.row.extend_from_slice(&((b - a) as i32).to_be_bytes());
                    self.row.extend_from_slice(&self.buf[*a..*b]);
                }
            }
        }
        match self.ordered.as_mut() {
            Some(h) => h.update(&self.row),
            None => self.hashes.push(Sha256::digest(&self.row).into()),
        }
        self.rows += 1;
        self.pos = at;
        Ok(true)
    }
}
