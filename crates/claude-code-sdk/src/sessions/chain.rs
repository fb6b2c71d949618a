//! The conversation of a transcript: the `parentUuid` chain from the latest message
//! back to the first, with the parallel tool calls and results the chain skips.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Entry types that are links of the `parentUuid` chain.
const CHAIN_TYPES: &[&str] = &["user", "assistant", "attachment", "system", "progress"];

/// One chain link. Only conversation entries keep their JSON.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) entry: Value,
    uuid: String,
    parent: Option<String>,
    kind: Kind,
    sidechain: bool,
    hidden: bool,
    message_id: Option<String>,
    tool_uses: Vec<String>,
    tool_results: Vec<String>,
    timestamp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    User,
    Assistant,
    Other,
}

/// Collects chain links from a transcript's entries, in file order.
#[derive(Debug, Default)]
pub(crate) struct ChainBuilder {
    nodes: Vec<Node>,
}

fn block_ids(entry: &Value, block_type: &str, field: &str) -> Vec<String> {
    entry["message"]["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == block_type)
                .filter_map(|b| b[field].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl ChainBuilder {
    pub(crate) fn add(&mut self, entry: Value) {
        let Some(kind) = entry.get("type").and_then(Value::as_str) else {
            return;
        };
        if !CHAIN_TYPES.contains(&kind) {
            return;
        }
        let Some(uuid) = entry.get("uuid").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let kind = match kind {
            "user" => Kind::User,
            "assistant" => Kind::Assistant,
            _ => Kind::Other,
        };
        let flag = |name: &str| entry.get(name).and_then(Value::as_bool) == Some(true);
        let sidechain = flag("isSidechain");
        let hidden = flag("isMeta") || entry.get("teamName").is_some_and(|t| !t.is_null());
        let message_id = (kind == Kind::Assistant)
            .then(|| entry["message"]["id"].as_str().map(str::to_owned))
            .flatten();
        let tool_uses = if kind == Kind::Assistant {
            block_ids(&entry, "tool_use", "id")
        } else {
            Vec::new()
        };
        let tool_results = if kind == Kind::User {
            block_ids(&entry, "tool_result", "tool_use_id")
        } else {
            Vec::new()
        };
        let parent = entry
            .get("parentUuid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let timestamp = entry
            .get("timestamp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // Only conversation entries are returned; the others are links only.
        let entry = if kind == Kind::Other {
            Value::Null
        } else {
            entry
        };
        self.nodes.push(Node {
            entry,
            uuid,
            parent,
            kind,
            sidechain,
            hidden,
            message_id,
            tool_uses,
            tool_results,
            timestamp,
        });
    }

    /// The visible conversation (user and assistant entries of the main chain, not
    /// meta), oldest first.
    pub(crate) fn conversation(self) -> Vec<Value> {
        let nodes = self.nodes;
        let mut by_uuid: HashMap<&str, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            by_uuid.insert(&node.uuid, i);
        }
        let walk_to_message = |mut i: usize| -> Option<usize> {
            let mut seen = HashSet::new();
            loop {
                if !seen.insert(i) {
                    return None;
                }
                if nodes[i].kind != Kind::Other {
                    return Some(i);
                }
                i = *by_uuid.get(nodes[i].parent.as_deref()?)?;
            }
        };
        // Leaves: from each entry nothing points to, the nearest message up the chain.
        // For the main conversation only main entries count as children, so a
        // subagent's entry hanging off a message does not hide it.
        let leaves = |main: bool| -> Vec<usize> {
            let parents: HashSet<&str> = nodes
                .iter()
                .filter(|n| !main || !n.sidechain)
                .filter_map(|n| n.parent.as_deref())
                .collect();
            nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| (!main || !n.sidechain) && !parents.contains(n.uuid.as_str()))
                .filter_map(|(i, _)| walk_to_message(i))
                .filter(|&i| !main || (!nodes[i].sidechain && !nodes[i].hidden))
                .collect()
        };
        let Some(leaf) = leaves(true)
            .into_iter()
            .max()
            .or_else(|| leaves(false).into_iter().max())
        else {
            return Vec::new();
        };
        let mut chain = Vec::new();
        let mut on_chain = HashSet::new();
        let mut cursor = Some(leaf);
        while let Some(i) = cursor {
            if !on_chain.insert(i) {
                break;
            }
            chain.push(i);
            cursor = nodes[i]
                .parent
                .as_deref()
                .and_then(|p| by_uuid.get(p).copied());
        }
        chain.reverse();
        let chain = recover_parallel(&nodes, chain, &mut on_chain);
        let mut nodes: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        chain
            .into_iter()
            .filter_map(|i| nodes[i].take())
            .filter(|n| n.kind != Kind::Other && !n.sidechain && !n.hidden)
            .map(|n| n.entry)
            .collect()
    }
}

/// A response with parallel tool calls is several assistant entries sharing a
/// `message.id`, chained one after the other; each tool result's parent is its own
/// call, so the results fan out and the `parentUuid` walk keeps only the branch the
/// conversation went on from. This puts every entry of each response on the chain,
/// and every result of its calls, right after the response's last entry on the chain.
fn recover_parallel(
    nodes: &[Node],
    chain: Vec<usize>,
    on_chain: &mut HashSet<usize>,
) -> Vec<usize> {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(id) = &node.message_id {
            groups.entry(id).or_default().push(i);
        }
    }
    let mut anchors: HashMap<&str, usize> = HashMap::new();
    for &i in &chain {
        if let Some(id) = &nodes[i].message_id {
            anchors.insert(id, i);
        }
    }
    let mut inserts: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut done: HashSet<&str> = HashSet::new();
    for &i in &chain {
        let Some(id) = nodes[i].message_id.as_deref() else {
            continue;
        };
        if !done.insert(id) {
            continue;
        }
        let Some(members) = groups.get(id) else {
            continue;
        };
        let member_uuids: HashSet<&str> = members.iter().map(|&m| nodes[m].uuid.as_str()).collect();
        let calls: HashSet<&str> = members
            .iter()
            .flat_map(|&m| nodes[m].tool_uses.iter().map(String::as_str))
            .collect();
        let sidechain = nodes[i].sidechain;
        let mut siblings: Vec<usize> = members
            .iter()
            .copied()
            .filter(|m| !on_chain.contains(m))
            .collect();
        let mut results: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(r, n)| {
                n.kind == Kind::User
                    && !n.tool_results.is_empty()
                    && !on_chain.contains(r)
                    && n.sidechain == sidechain
                    && (n
                        .parent
                        .as_deref()
                        .is_some_and(|p| member_uuids.contains(p))
                        || n.tool_results.iter().any(|t| calls.contains(t.as_str())))
            })
            .map(|(r, _)| r)
            .collect();
        if siblings.is_empty() && results.is_empty() {
            continue;
        }
        let order = |&a: &usize| (nodes[a].timestamp.clone(), a);
        siblings.sort_by_key(order);
        results.sort_by_key(order);
        let recovered: Vec<usize> = siblings.into_iter().chain(results).collect();
        let Some(&anchor) = anchors.get(id) else {
            continue;
        };
        on_chain.extend(recovered.iter().copied());
        inserts.insert(anchor, recovered);
    }
    if inserts.is_empty() {
        return chain;
    }
    let mut out = Vec::with_capacity(chain.len());
    for i in chain {
        out.push(i);
        if let Some(extra) = inserts.remove(&i) {
            out.extend(extra);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(uuid: &str, parent: Option<&str>, text: &str) -> Value {
        json!({"type": "user", "uuid": uuid, "parentUuid": parent, "message": {"role": "user", "content": text}})
    }

    fn call(uuid: &str, parent: &str, msg: &str, tool: &str) -> Value {
        json!({"type": "assistant", "uuid": uuid, "parentUuid": parent,
               "message": {"id": msg, "content": [{"type": "tool_use", "id": tool, "name": "Bash", "input": {}}]}})
    }

    fn result(uuid: &str, parent: &str, tool: &str) -> Value {
        json!({"type": "user", "uuid": uuid, "parentUuid": parent,
               "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool, "content": "ok"}]}})
    }

    fn uuids(entries: &[Value]) -> Vec<&str> {
        entries
            .iter()
            .map(|e| e["uuid"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn parallel_results_come_back_and_branches_do_not() {
        let mut builder = ChainBuilder::default();
        for entry in [
            user("u1", None, "go"),
            // An abandoned branch: written before the one the conversation went on with.
            user("old", Some("u1"), "abandoned"),
            json!({"type": "attachment", "uuid": "x1", "parentUuid": "u1"}),
            call("a1", "x1", "m1", "t1"),
            call("a2", "a1", "m1", "t2"),
            result("r1", "a1", "t1"),
            result("r2", "a2", "t2"),
            json!({"type": "assistant", "uuid": "a3", "parentUuid": "r2",
                   "message": {"id": "m2", "content": [{"type": "text", "text": "done"}]}}),
            // A subagent's entries stay out.
            json!({"type": "user", "uuid": "s1", "parentUuid": "a3", "isSidechain": true, "message": {"content": "side"}}),
        ] {
            builder.add(entry);
        }
        let conversation = builder.conversation();
        assert_eq!(uuids(&conversation), ["u1", "a1", "a2", "r1", "r2", "a3"]);
    }

    #[test]
    fn the_walk_through_the_first_result_recovers_the_second_call() {
        let mut builder = ChainBuilder::default();
        for entry in [
            user("u1", None, "go"),
            call("a1", "u1", "m1", "t1"),
            call("a2", "a1", "m1", "t2"),
            result("r1", "a1", "t1"),
            result("r2", "a2", "t2"),
            json!({"type": "assistant", "uuid": "a3", "parentUuid": "r1",
                   "message": {"id": "m2", "content": [{"type": "text", "text": "done"}]}}),
        ] {
            builder.add(entry);
        }
        let conversation = builder.conversation();
        let got = uuids(&conversation);
        assert_eq!(got.len(), 6, "{got:?}");
        for uuid in ["u1", "a1", "a2", "r1", "r2", "a3"] {
            assert!(got.contains(&uuid), "{uuid} missing from {got:?}");
        }
        assert_eq!(got.last(), Some(&"a3"));
    }

    #[test]
    fn empty_and_cyclic_transcripts_end() {
        assert!(ChainBuilder::default().conversation().is_empty());
        let mut builder = ChainBuilder::default();
        builder.add(user("a", Some("b"), "x"));
        builder.add(user("b", Some("a"), "y"));
        assert!(builder.conversation().len() <= 2);
    }
}
