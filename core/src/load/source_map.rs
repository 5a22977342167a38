//! Field path -> (line, column) for a YAML document, built from the parser's event stream.
//!
//! serde gives us values without positions; validation speaks in field paths
//! (`apps[0].sites[2]`). This map turns such a path back into a place in the user's file.

use std::collections::BTreeMap;

use granit_parser::{Event, Parser};

#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// Path -> 1-based (line, column) of the node's value.
    nodes: BTreeMap<String, (usize, usize)>,
    /// Path -> 1-based (line, column) of the mapping key that introduces it.
    keys: BTreeMap<String, (usize, usize)>,
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

impl SourceMap {
    /// Builds the map; YAML that does not parse yields whatever was read before the error
    /// (serde reports the error itself).
    pub fn build(text: &str) -> Self {
        let mut nodes = BTreeMap::new();
        let mut keys = BTreeMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Mapping { path, key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let k = value.into_owned();
                        let full = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        keys.entry(full).or_insert(pos);
                        *key = Some(k);
                        continue;
                    }
                    let path = child_path(&mut stack);
                    nodes.entry(path).or_insert(pos);
                }
                Event::Alias(_) => {
                    let path = child_path(&mut stack);
                    nodes.entry(path).or_insert(pos);
                }
                Event::MappingStart(..) => {
                    let path = child_path(&mut stack);
                    nodes.entry(path.clone()).or_insert(pos);
                    stack.push(Frame::Mapping { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = child_path(&mut stack);
                    nodes.entry(path.clone()).or_insert(pos);
                    stack.push(Frame::Sequence { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        Self { nodes, keys }
    }

    /// Location of `path`, or of its nearest ancestor that exists in the file (a missing field
    /// points at the mapping that lacks it). `(0, 0)` when nothing matches.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(&loc) = self.nodes.get(p) {
                return loc;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.nodes.get("").copied().unwrap_or((0, 0)),
            }
        }
    }

    /// The deepest path whose node starts at or before (line, column): used to name the field
    /// of a serde error that only carries a position.
    pub fn path_at(&self, line: usize, column: usize) -> Option<String> {
        // A mapping that starts here is the subject (e.g. a missing field); otherwise a key
        // that starts here is (e.g. an unknown field).
        let container = self
            .nodes
            .iter()
            .filter(|(_, pos)| **pos == (line, column))
            .min_by_key(|(p, _)| p.len());
        if let Some((path, _)) = container {
            return Some(path.clone());
        }
        if let Some((path, _)) = self.keys.iter().find(|(_, pos)| **pos == (line, column)) {
            return Some(path.clone());
        }
        self.nodes
            .iter()
            .filter(|(_, (l, c))| (*l, *c) <= (line, column))
            .max_by_key(|(path, (l, c))| (*l, *c, path.len()))
            .map(|(path, _)| path.clone())
    }
}

/// The path of the next node in the innermost container, advancing that container.
fn child_path(stack: &mut [Frame]) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Mapping { path, key }) => {
            let k = key.take().unwrap_or_default();
            if path.is_empty() {
                k
            } else {
                format!("{path}.{k}")
            }
        }
        Some(Frame::Sequence { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            p
        }
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "version: 1\nsites:\n  - id: a\n    clouds: [x, y]\n  - id: b\n    tier: prod\n";

    #[test]
    fn locates_nested_paths() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.locate("version"), (1, 10));
        assert_eq!(map.locate("sites[0].id"), (3, 9));
        assert_eq!(map.locate("sites[0].clouds[1]"), (4, 17));
        assert_eq!(map.locate("sites[1].tier"), (6, 11));
    }

    #[test]
    fn missing_field_points_at_nearest_ancestor() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.locate("sites[1].roles[0].name"), map.locate("sites[1]"));
        assert_eq!(map.locate("sites[1]"), (5, 5));
    }

    #[test]
    fn path_at_finds_deepest_node_before_position() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.path_at(6, 11).as_deref(), Some("sites[1].tier"));
    }

    #[test]
    fn path_at_a_key_names_that_key() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.path_at(6, 5).as_deref(), Some("sites[1].tier"));
        assert_eq!(map.path_at(4, 5).as_deref(), Some("sites[0].clouds"));
        // Where a mapping starts, the mapping is meant, not its first key.
        assert_eq!(map.path_at(5, 5).as_deref(), Some("sites[1]"));
    }
}
