//! Small helpers shared across the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks a std mutex, going on after a panic in another holder: every mutex in this
/// crate guards plain data that stays consistent between statements, and none is
/// held across an `.await`.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
