//! Naming GEMM sites: models open nested scopes and the decorator reads the current name.
//!
//! ```
//! use fp8_core::sites;
//! let _block = sites::scope("h.3");
//! let _attn = sites::scope("attn");
//! let _gemm = sites::scope("qkv");
//! assert_eq!(sites::current().as_deref(), Some("h.3.attn.qkv"));
//! ```
//!
//! Scopes live in a thread-local stack: burn's CPU backends run every op, forward and backward,
//! on the calling thread, so the name a GEMM sees is the one its model code opened.

use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static STACK: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
}

/// Pops its scope when dropped.
#[must_use = "the scope ends when this guard is dropped"]
pub struct ScopeGuard {
    depth: usize,
}

/// Enter a scope named `name` (joined to the enclosing scope with `.`).
pub fn scope(name: &str) -> ScopeGuard {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        let full: Arc<str> = match s.last() {
            Some(parent) if !parent.is_empty() => format!("{parent}.{name}").into(),
            _ => name.into(),
        };
        s.push(full);
        ScopeGuard { depth: s.len() }
    })
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        STACK.with(|s| s.borrow_mut().truncate(self.depth - 1));
    }
}

/// The full name of the innermost scope, if any.
pub fn current() -> Option<Arc<str>> {
    STACK.with(|s| s.borrow().last().cloned())
}

/// Run `f` inside a scope; convenience for one GEMM.
pub fn with<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _g = scope(name);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_joins_and_unwinds() {
        assert_eq!(current(), None);
        {
            let _a = scope("h.0");
            {
                let _b = scope("mlp");
                let _c = scope("fc");
                assert_eq!(current().as_deref(), Some("h.0.mlp.fc"));
            }
            assert_eq!(current().as_deref(), Some("h.0"));
        }
        assert_eq!(current(), None);
        assert_eq!(with("lm_head", current).as_deref(), Some("lm_head"));
    }
}
