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
    // Bytewise order (as the database's `ORDER BY` of bytea), compared by the first 16 bytes
    // as one number before the rest: a sort of millions of hashes spent most of its time in
    // `memcmp` calls.
    let head = |h: &[u8; 32]| u128::from_be_bytes(h[..16].try_into().expect("16 bytes"));
    hashes.sort_unstable_by(|a, b| head(a).cmp(&head(b)).then_with(|| a.cmp(b)));
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
    /// How many fields are compared (the record's column count).
    compared: i32,
    /// The bytes of a header or row that has not arrived whole yet.
    buf: Vec<u8>,
    header_done: bool,
    ended: bool,
    /// Rows in key order: one running hash over every row's bytes.
    ordered: Option<Sha256>,
    /// Rows without an order: each row's hash, sorted at the end.
    hashes: Vec<[u8; 32]>,
    rows: i64,
    /// The record of the row being hashed, and where its fields lie in the input.
    row: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

impl CopyHasher {
    /// `ordered`: the stream holds a keyed table's rows in key order (`sql::copy_out` sorts
    /// them so), hashed as one sequence; otherwise as a multiset.
    pub fn new(fields: Vec<Option<u32>>, ordered: bool) -> Self {
        let compared = fields.iter().filter(|f| f.is_some()).count() as i32;
        Self {
            spans: Vec::with_capacity(fields.len()),
            fields,
            compared,
            buf: Vec::new(),
            header_done: false,
            ended: false,
            ordered: ordered.then(Sha256::new),
            hashes: Vec::new(),
            rows: 0,
            row: Vec::new(),
        }
    }

    /// More bytes of the stream. A server sends each row as one message, so a piece usually
    /// holds whole rows, parsed where they lie; only a row cut between pieces is kept back.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        if self.buf.is_empty() {
            let used = self.parse(data)?;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(data);
            let used = self.parse(&buf)?;
            buf.drain(..used);
            self.buf = buf;
        }
        Ok(())
    }

    /// Parses the whole headers and rows at the start of `input`; how many bytes they took.
    fn parse(&mut self, input: &[u8]) -> Result<usize, String> {
        let mut pos = 0;
        while let Some(n) = self.step(&input[pos..])? {
            pos += n;
        }
        Ok(pos)
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

    /// Parses the header or one row at the start of `input` if it is whole: the bytes it took,
    /// `None` when more are needed (or the stream has ended).
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, String> {
        if self.ended {
            return Ok(None);
        }
        if !self.header_done {
            let Some(head) = input.get(..19) else {
                return Ok(None);
            };
            if &head[..11] != SIGNATURE {
                return Err("not a binary COPY stream".into());
            }
            let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]) as usize;
            if input.len() < 19 + ext {
                return Ok(None);
            }
            self.header_done = true;
            return Ok(Some(19 + ext));
        }
        let Some(n) = input.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
            return Ok(None);
        };
        if n == -1 {
            self.ended = true;
            return Ok(Some(2));
        }
        if n as usize != self.fields.len() {
            return Err(format!(
                "a row of {n} fields, {} expected",
                self.fields.len()
            ));
        }
        Ok(self.row_if_whole(input))
    }

    /// Hashes the row at the start of `input` when all its fields have arrived: its length.
    fn row_if_whole(&mut self, input: &[u8]) -> Option<usize> {
        let mut at = 2;
        self.spans.clear();
        for _ in 0..self.fields.len() {
            let b = input.get(at..at + 4)?;
            let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            at += 4;
            if len < 0 {
                self.spans.push(None);
                continue;
            }
            let end = at + len as usize;
            if input.len() < end {
                return None;
            }
            self.spans.push(Some((at, end)));
            at = end;
        }
        self.row.clear();
        self.row.extend_from_slice(&self.compared.to_be_bytes());
        for (oid, span) in self.fields.iter().zip(&self.spans) {
            let Some(oid) = oid else { continue };
            self.row.extend_from_slice(&oid.to_be_bytes());
            match span {
                None => self.row.extend_from_slice(&(-1i32).to_be_bytes()),
                Some((a, b)) => {
                    self.row.extend_from_slice(&((b - a) as i32).to_be_bytes());
                    self.row.extend_from_slice(&input[*a..*b]);
                }
            }
        }
        match self.ordered.as_mut() {
            Some(h) => h.update(&self.row),
            None => self.hashes.push(Sha256::digest(&self.row).into()),
        }
        self.rows += 1;
        Some(at)
    }
}
