//! Write scopes: the paths of a repository a task may write (or read), as
//! gitignore-style globs, and whether two scopes can touch a common path.
//!
//! Globs are relative to the repository root:
//! - a pattern without a `/` matches at any depth (`*.toml` is `**/*.toml`);
//! - a leading `/` anchors a pattern at the root (`/Cargo.toml`);
//! - a pattern also covers everything under what it names (`src/api` and
//!   `src/api/` both cover `src/api/**`);
//! - `*` and `?` never cross a `/`; `**` does; `[abc]` and `{a,b}` as in git.
//!
//! Negations (`!pattern`) and paths leaving the repository (`..`) are refused:
//! a scope only ever widens what it covers, so a conflict check can be trusted.
//!
//! Overlap is decided exactly: each scope is compiled to one deterministic
//! automaton over path bytes (through `globset`'s regex translation and
//! `regex-automata`), and two scopes overlap when some path is accepted by both
//! (a search of the product automaton). When an automaton would be too large,
//! the scope is treated as covering everything: overlap is then answered
//! conservatively, never wrongly "disjoint".
//!
//! A crate of its own because the hub (which enforces scopes) and the sidecar
//! (whose pre-commit hook refuses commits outside a task's scope) must read a
//! glob the same way.
//!
//! Architecture invariant: pure data; no clock, no I/O, no actor.
#![warn(unreachable_pub)]

use std::collections::{HashSet, VecDeque};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// Largest automaton a scope may compile to (bytes); past it the scope covers
/// everything.
const DFA_BYTES: usize = 1 << 20;
/// Most state pairs an overlap check visits before it answers "overlap".
const PAIRS_VISITED: usize = 200_000;
/// Most globs in one scope, and longest glob.
pub const MAX_GLOBS: usize = 64;
pub const MAX_GLOB_LEN: usize = 512;

/// Why a glob list is not a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError {
    pub glob: String,
    pub reason: String,
}

impl std::fmt::Display for ScopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.glob, self.reason)
    }
}

/// A compiled scope (see the module documentation).
#[derive(Clone, Debug)]
pub struct Scope {
    globs: Vec<String>,
    /// `None`: too large to compile (or no globs, see `globs`): covers every
    /// path.
    dfa: Option<dense::DFA<Vec<u32>>>,
    /// The literal start of each pattern (up to its first glob character):
    /// every path a pattern matches starts with it, so two scopes none of
    /// whose starts is a prefix of another's are disjoint without a search.
    starts: Vec<String>,
}

impl Scope {
    /// Compiles `globs`; an empty list covers nothing.
    pub fn parse(globs: &[String]) -> Result<Scope, ScopeError> {
        if globs.len() > MAX_GLOBS {
            return Err(ScopeError {
                glob: globs[MAX_GLOBS].clone(),
                reason: format!("at most {MAX_GLOBS} globs per scope"),
            });
        }
        let mut regexes = Vec::with_capacity(globs.len() * 2);
        let mut starts = Vec::with_capacity(globs.len() * 2);
        for glob in globs {
            for pattern in normalize(glob)? {
                starts.push(literal_start(&pattern));
                let compiled = globset::GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|e| ScopeError {
                        glob: glob.clone(),
                        reason: e.kind().to_string(),
                    })?;
                regexes.push(compiled.regex().to_string());
            }
        }
        Ok(Scope {
            globs: globs.to_vec(),
            dfa: compile(&regexes),
            starts,
        })
    }

    /// A scope covering every path (what a stored scope that no longer
    /// compiles is taken as).
    pub fn everything() -> Scope {
        Scope {
            globs: vec!["**".into()],
            dfa: None,
            starts: vec![String::new()],
        }
    }

    /// A scope covering no path.
    pub fn nothing() -> Scope {
        Scope {
            globs: Vec::new(),
            dfa: None,
            starts: Vec::new(),
        }
    }

    /// The globs as given.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// Whether `path` (relative to the repository root) is in the scope.
    pub fn covers(&self, path: &str) -> bool {
        if self.globs.is_empty() {
            return false;
        }
        let Some(dfa) = &self.dfa else {
            return true;
        };
        let Some(mut s) = start(dfa) else {
            return true;
        };
        for b in path.trim_start_matches("./").bytes() {
            s = dfa.next_state(s, b);
            if dfa.is_dead_state(s) {
                return false;
            }
        }
        dfa.is_match_state(dfa.next_eoi_state(s))
    }

    /// Whether some path is in both scopes.
    pub fn overlaps(&self, other: &Scope) -> bool {
        if self.globs.is_empty() || other.globs.is_empty() {
            return false;
        }
        let compatible = self.starts.iter().any(|p| {
            other
                .starts
                .iter()
                .any(|q| p.starts_with(q.as_str()) || q.starts_with(p.as_str()))
        });
        if !compatible {
            return false;
        }
        let (Some(a), Some(b)) = (&self.dfa, &other.dfa) else {
            return true;
        };
        let (Some(sa), Some(sb)) = (start(a), start(b)) else {
            return true;
        };
        let mut seen: HashSet<(StateID, StateID)> = HashSet::new();
        let mut queue = VecDeque::from([(sa, sb)]);
        seen.insert((sa, sb));
        while let Some((x, y)) = queue.pop_front() {
            if a.is_match_state(a.next_eoi_state(x)) && b.is_match_state(b.next_eoi_state(y)) {
                return true;
            }
            for byte in 0..=u8::MAX {
                let (nx, ny) = (a.next_state(x, byte), b.next_state(y, byte));
                if a.is_dead_state(nx) || b.is_dead_state(ny) || !seen.insert((nx, ny)) {
                    continue;
                }
                if seen.len() > PAIRS_VISITED {
                    return true;
                }
                queue.push_back((nx, ny));
            }
        }
        false
    }
}

/// The literal text a pattern starts with, up to its first glob character.
fn literal_start(pattern: &str) -> String {
    pattern
        .chars()
        .take_while(|c| !matches!(c, '*' | '?' | '[' | '{' | '\\'))
        .collect()
}

/// The globset patterns a gitignore-style glob stands for: itself and
/// everything under it, anchored at the repository root.
fn normalize(glob: &str) -> Result<Vec<String>, ScopeError> {
    let refuse = |reason: &str| ScopeError {
        glob: glob.to_string(),
        reason: reason.to_string(),
    };
    let g = glob.trim();
    if g.is_empty() {
        return Err(refuse("an empty glob"));
    }
    if g.len() > MAX_GLOB_LEN {
        return Err(refuse(&format!("longer than {MAX_GLOB_LEN} bytes")));
    }
    if g.starts_with('!') {
        return Err(refuse("negations are not supported in scopes"));
    }
    if g.split('/').any(|c| c == "..") {
        return Err(refuse("a scope cannot leave the repository"));
    }
    let g = g.strip_prefix("./").unwrap_or(g);
    let dir = g.ends_with('/');
    let g = g.trim_end_matches('/');
    let anchored = g.starts_with('/') || g.contains('/');
    let g = g.trim_start_matches('/');
    if g.is_empty() {
        // `/`: the whole repository.
        return Ok(vec!["**".into()]);
    }
    let base = if anchored {
        g.to_string()
    } else {
        format!("**/{g}")
    };
    let under = format!("{base}/**");
    Ok(if dir { vec![under] } else { vec![base, under] })
}

/// One automaton accepting every path any of `regexes` matches; `None` when
/// it would be too large (or empty input: nothing to match).
fn compile(regexes: &[String]) -> Option<dense::DFA<Vec<u32>>> {
    if regexes.is_empty() {
        return None;
    }
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(DFA_BYTES))
                .determinize_size_limit(Some(DFA_BYTES)),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false))
        .build_many(regexes)
        .ok()
}

fn start(dfa: &dense::DFA<Vec<u32>>) -> Option<StateID> {
    dfa.start_state_forward(&Input::new("").anchored(Anchored::Yes))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(globs: &[&str]) -> Scope {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        Scope::parse(&globs).unwrap_or_else(|e| panic!("{globs:?}: {e}"))
    }

    #[test]
    fn overlap_is_decided_on_a_table_of_cases() {
        // (a, b, overlap?)
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&["src/api/**"], &["src/api/handlers.rs"], true),
            // Literal starts decide these without a search.
            (&["mod1/**"], &["mod10/**"], false),
            (&["mod1/**"], &["mod1/x/**"], true),
            (
                &["mod1/**", "/Cargo.toml"],
                &["mod2/**", "Cargo.toml"],
                true,
            ),
            (&["src/{a,b}/**"], &["src/b/x.rs"], true),
            (&["src/[ab]x/**"], &["src/bx/y"], true),
            (&["src/api/**"], &["src/web/**"], false),
            (&["src/api"], &["src/api/v2/x.rs"], true),
            (&["src/api/"], &["src/apiary.rs"], false),
            (&["src/*.rs"], &["src/main.rs"], true),
            (&["src/*.rs"], &["src/bin/main.rs"], false),
            (&["src/**/*.rs"], &["src/bin/main.rs"], true),
            (&["*.toml"], &["crates/x/Cargo.toml"], true),
            (&["/Cargo.toml"], &["crates/x/Cargo.toml"], false),
            (&["/Cargo.toml"], &["Cargo.toml"], true),
            (&["docs/*.md"], &["docs/*.txt"], false),
            (&["docs/a*"], &["docs/*b"], true),
            (&["docs/a?c"], &["docs/abd"], false),
            (&["docs/[ab].md"], &["docs/c.md"], false),
            (&["docs/[ab].md"], &["docs/b.md"], true),
            (&["{src,lib}/x.rs"], &["lib/**"], true),
            (&["{src,lib}/x.rs"], &["bin/**"], false),
            (&["infra/**", "README.md"], &["docs/README.md"], true),
            (&["infra/**"], &["/README.md", "docs/**"], false),
            // Unanchored: any README.md, infra/README.md too.
            (&["infra/**"], &["README.md"], true),
            (&["a/**/z"], &["a/b/c/z"], true),
            (&["a/*/z"], &["a/b/c/z"], false),
            (&["/"], &["anything/at/all"], true),
            (&["./src/lib.rs"], &["/src/lib.rs"], true),
            (&[], &["**"], false),
        ];
        for (a, b, expected) in cases {
            let (sa, sb) = (scope(a), scope(b));
            assert_eq!(sa.overlaps(&sb), *expected, "{a:?} vs {b:?}");
            assert_eq!(sb.overlaps(&sa), *expected, "{b:?} vs {a:?} (symmetric)");
        }
    }

    #[test]
    fn covers_follows_the_gitignore_rules() {
        let s = scope(&["*.toml", "/infra/", "src/api"]);
        for path in [
            "Cargo.toml",
            "a/b/c.toml",
            "infra/main.tf",
            "src/api/x/y.rs",
            "./src/api",
        ] {
            assert!(s.covers(path), "{path}");
        }
        for path in ["Cargo.lock", "x/infra/main.tf", "src/apiary.rs", "infra"] {
            assert!(!s.covers(path), "{path}");
        }
    }

    #[test]
    fn bad_globs_are_refused_with_the_reason() {
        for (glob, reason) in [
            ("", "an empty glob"),
            ("!src/**", "negations are not supported in scopes"),
            ("../elsewhere/**", "a scope cannot leave the repository"),
            ("src/[a-", "unclosed character class; missing ']'"),
        ] {
            let e = Scope::parse(&[glob.to_string()]).expect_err(glob);
            assert_eq!(e.glob, glob);
            assert_eq!(e.reason, reason, "{glob}");
        }
        let many: Vec<String> = (0..=MAX_GLOBS).map(|i| format!("f{i}")).collect();
        assert!(Scope::parse(&many).is_err());
    }

    #[test]
    fn an_automaton_too_large_to_build_overlaps_everything() {
        // Many alternatives of long character classes: far past the size limit.
        let globs: Vec<String> = (0..MAX_GLOBS)
            .map(|i| format!("**/{}/**/*{i}*[a-z][a-z][a-z]*", "[a-z]?".repeat(30)))
            .collect();
        let big = Scope::parse(&globs).expect("valid globs");
        assert!(big.dfa.is_none(), "past the size limit");
        assert!(big.overlaps(&scope(&["zzz/never"])), "conservative");
        assert!(big.covers("zzz/never"));
    }
}
