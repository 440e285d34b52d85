//! Decoded DS group views kept between commits. Restoring a view means
//! reading, checking and parsing the group's snapshot (5.2 MB of OpenMLS
//! public state at 1000 members with the PQ suite) and replaying its log; a
//! commit that finds the view of the state it is about to change skips all
//! of that, and a snapshot serialises the kept view.
//!
//! A view is filed under its group's `state_version`, which every change of
//! the state bumps; it is handed out only for that exact version, so a view
//! is never used once the stored state moved on (another commit, a leave
//! proposal, another server process on the same database). Taking a view
//! removes it: a commit that fails half way (the view may be changed) or
//! loses the epoch race simply does not put it back. Versions identify a
//! state only because group ids are never reused (the store deletes no
//! group); a cache belongs to one store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use quicprochat_core::DsGroupView;

/// Stored-state bytes of the views kept at once (their decoded form takes
/// about twice as much memory).
pub const DEFAULT_VIEW_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Decoded views by group id.
#[derive(Debug)]
pub struct ViewCache {
    inner: Mutex<Views>,
    /// Groups whose view some request is restoring right now.
    restoring: Mutex<HashSet<Vec<u8>>>,
    /// Groups whose last restores by a housekeeping sweep failed: how many
    /// failed in a row and how many more sweeps skip the group.
    failed_restores: Mutex<HashMap<Vec<u8>, FailedRestores>>,
    budget_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often [`ViewCache::take`] found the view asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewCacheStats {
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Default)]
struct Views {
    by_group: HashMap<Vec<u8>, Kept>,
    /// `(group id, filing)` in the order views were filed, oldest first; an
    /// entry whose filing is not the kept view's is stale and skipped.
    order: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    /// Counts every `put`, so each filing is told apart.
    filings: u64,
}

#[derive(Debug)]
struct Kept {
    filing: u64,
    state_version: u64,
    stored_bytes: usize,
    view: DsGroupView,
}

/// Most sweeps skipped after failed restores (64 sweeps of 5 s: about five
/// minutes between attempts at a group that never restores).
pub const MAX_SKIPPED_SWEEPS: u32 = 64;

#[derive(Debug, Default)]
struct FailedRestores {
    failures: u32,
    skip_sweeps: u32,
}

/// The right to restore one group's view; see [`ViewCache::claim_restore`].
#[derive(Debug)]
pub struct RestoreClaim<'a> {
    cache: &'a ViewCache,
    group_id: Vec<u8>,
}

impl Drop for RestoreClaim<'_> {
    fn drop(&mut self) {
        let mut restoring = self.cache.restoring.lock().unwrap_or_else(PoisonError::into_inner);
        restoring.remove(&self.group_id);
    }
}

impl Default for ViewCache {
    fn default() -> Self {
        ViewCache::with_budget(DEFAULT_VIEW_CACHE_BYTES)
    }
}

impl ViewCache {
    /// A cache holding views of at most `budget_bytes` stored state (0 keeps nothing).
    pub fn with_budget(budget_bytes: usize) -> ViewCache {
        ViewCache {
            inner: Mutex::new(Views::default()),
            restoring: Mutex::default(),
            failed_restores: Mutex::default(),
            budget_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn views(&self) -> MutexGuard<'_, Views> {
        // Every update leaves the maps consistent (a view is in `by_group`
        // or not), so a panic elsewhere does not spoil them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The view of `group_id` at exactly `state_version`, if kept. Removes
    /// whatever was kept for the group.
    pub fn take(&self, group_id: &[u8], state_version: u64) -> Option<DsGroupView> {
        let taken = {
            let mut views = self.views();
            views.by_group.remove(group_id).and_then(|kept| {
                views.bytes -= kept.stored_bytes;
                (kept.state_version == state_version).then_some(kept.view)
            })
        };
        let counter = if taken.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        taken
    }

    /// The view of `group_id` at exactly `state_version`, if kept; a view
    /// of another version stays (for a reader that must not discard a
    /// newer view, e.g. a snapshot). Not counted as a hit or miss.
    pub fn take_exact(&self, group_id: &[u8], state_version: u64) -> Option<DsGroupView> {
        let mut views = self.views();
        if views.by_group.get(group_id).is_none_or(|kept| kept.state_version != state_version) {
            return None;
        }
        let kept = views.by_group.remove(group_id)?;
        views.bytes -= kept.stored_bytes;
        Some(kept.view)
    }

    /// Claims the restore of `group_id`'s view: `None` while another
    /// request restores it (one restore in flight per group; the caller
    /// tells its client to retry), else a claim held until dropped.
    pub fn claim_restore(&self, group_id: &[u8]) -> Option<RestoreClaim<'_>> {
        let mut restoring = self.restoring.lock().unwrap_or_else(PoisonError::into_inner);
        restoring.insert(group_id.to_vec()).then(|| RestoreClaim { cache: self, group_id: group_id.to_vec() })
    }

    /// Whether a housekeeping sweep should leave `group_id` alone this
    /// time, its recent restores having failed; counts the skip.
    pub fn sweep_skips(&self, group_id: &[u8]) -> bool {
        let mut failed = self.failed_restores.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.get_mut(group_id) {
            Some(entry) if entry.skip_sweeps > 0 => {
                entry.skip_sweeps -= 1;
                true
            }
            _ => false,
        }
    }

    /// Records how a sweep's restore of `group_id` went: after `n` failures
    /// in a row the next `min(2^n, MAX_SKIPPED_SWEEPS)` sweeps skip it.
    pub fn sweep_restored(&self, group_id: &[u8], succeeded: bool) {
        let mut failed = self.failed_restores.lock().unwrap_or_else(PoisonError::into_inner);
        if succeeded {
            failed.remove(group_id);
            return;
        }
        let entry = failed.entry(group_id.to_vec()).or_default();
        entry.failures = entry.failures.saturating_add(1);
        entry.skip_sweeps = 1u32.checked_shl(entry.failures).unwrap_or(u32::MAX).min(MAX_SKIPPED_SWEEPS);
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> ViewCacheStats {
        ViewCacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    /// Keeps `view`, the group's state at `state_version`, whose stored
    /// form is about `stored_bytes` long; evicts the oldest views over budget.
    pub fn put(&self, group_id: &[u8], state_version: u64, stored_bytes: usize, view: DsGroupView) {
        self.file(group_id, state_version, stored_bytes, view, true);
    }

    /// Like [`ViewCache::put`], but keeps whatever view of the group is
    /// there already: for a view taken only to be read (a snapshot), which
    /// must not replace a newer one filed meanwhile.
    pub fn put_back(&self, group_id: &[u8], state_version: u64, stored_bytes: usize, view: DsGroupView) {
        self.file(group_id, state_version, stored_bytes, view, false);
    }

    fn file(&self, group_id: &[u8], state_version: u64, stored_bytes: usize, view: DsGroupView, replace: bool) {
        if stored_bytes > self.budget_bytes {
            return;
        }
        let mut views = self.views();
        if !replace && views.by_group.contains_key(group_id) {
            return;
        }
        if let Some(old) = views.by_group.remove(group_id) {
            views.bytes -= old.stored_bytes;
        }
        while views.bytes + stored_bytes > self.budget_bytes {
            let Some((oldest, filing)) = views.order.pop_front() else { break };
            if views.by_group.get(&oldest).is_some_and(|kept| kept.filing == filing) {
                if let Some(evicted) = views.by_group.remove(&oldest) {
                    views.bytes -= evicted.stored_bytes;
                }
            }
        }
        views.filings += 1;
        let filing = views.filings;
        views.bytes += stored_bytes;
        views.by_group.insert(group_id.to_vec(), Kept { filing, state_version, stored_bytes, view });
        views.order.push_back((group_id.to_vec(), filing));
        // Stale entries (views taken or filed again) pile up in `order`;
        // drop them once they outnumber the views kept.
        if views.order.len() > 2 * views.by_group.len() + 16 {
            let Views { by_group, order, .. } = &mut *views;
            order.retain(|(id, filing)| by_group.get(id).is_some_and(|kept| kept.filing == *filing));
        }
    }

    /// Views kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.views().by_group.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quicprochat_core::{Identity, MlsClient};

    use super::*;

    fn view(dir: &tempfile::TempDir, group_id: &[u8]) -> DsGroupView {
        static CLIENTS: AtomicU64 = AtomicU64::new(0);
        let db = dir.path().join(format!("creator-{}.db", CLIENTS.fetch_add(1, Ordering::Relaxed)));
        let client = MlsClient::open(&db, Identity::generate().unwrap(), "creator").unwrap();
        let bootstrap = client.create_group(group_id).unwrap();
        DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).unwrap()
    }

    #[test]
    fn failed_sweep_restores_back_off_and_a_success_resets() {
        let cache = ViewCache::default();
        assert!(!cache.sweep_skips(b"g1"));
        cache.sweep_restored(b"g1", false);
        assert_eq!((0..3).map(|_| cache.sweep_skips(b"g1")).collect::<Vec<_>>(), [true, true, false]);
        cache.sweep_restored(b"g1", false);
        assert_eq!((0..5).filter(|_| cache.sweep_skips(b"g1")).count(), 4, "twice as long after two");
        for _ in 0..20 {
            cache.sweep_restored(b"g1", false);
        }
        assert_eq!((0..100).filter(|_| cache.sweep_skips(b"g1")).count(), MAX_SKIPPED_SWEEPS as usize);
        cache.sweep_restored(b"g1", true);
        assert!(!cache.sweep_skips(b"g1"));
    }

    #[test]
    fn one_restore_per_group_at_a_time() {
        let cache = ViewCache::default();
        let claim = cache.claim_restore(b"g1").unwrap();
        assert!(cache.claim_restore(b"g1").is_none());
        assert!(cache.claim_restore(b"g2").is_some());
        drop(claim);
        assert!(cache.claim_restore(b"g1").is_some());
    }

    #[test]
    fn a_view_is_handed_out_once_and_only_for_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::default();
        cache.put(b"g1", 3, 100, view(&dir, b"g1"));
        assert!(cache.take(b"g1", 4).is_none(), "another version");
        assert!(cache.take(b"g1", 3).is_none(), "a miss drops the stale view");
        cache.put(b"g1", 3, 100, view(&dir, b"g1"));
        assert!(cache.take(b"g1", 3).is_some());
        assert!(cache.take(b"g1", 3).is_none(), "taken views are gone");
        assert_eq!(cache.stats(), ViewCacheStats { hits: 1, misses: 3 });
    }

    #[test]
    fn the_oldest_views_go_over_budget_and_oversized_ones_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::with_budget(250);
        cache.put(b"g1", 1, 100, view(&dir, b"g1"));
        cache.put(b"g2", 1, 100, view(&dir, b"g2"));
        cache.put(b"g3", 1, 100, view(&dir, b"g3"));
        assert_eq!(cache.len(), 2);
        assert!(cache.take(b"g1", 1).is_none(), "the oldest was evicted");
        assert!(cache.take(b"g3", 1).is_some());
        cache.put(b"g4", 1, 251, view(&dir, b"g4"));
        assert!(cache.take(b"g4", 1).is_none(), "larger than the whole budget");
    }

    #[test]
    fn take_exact_leaves_a_view_of_another_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::default();
        cache.put(b"g1", 5, 100, view(&dir, b"g1"));
        assert!(cache.take_exact(b"g1", 4).is_none());
        assert!(cache.take_exact(b"g1", 5).is_some(), "the newer view was left in place");
        assert!(cache.take_exact(b"g1", 5).is_none());
        assert_eq!(cache.stats(), ViewCacheStats { hits: 0, misses: 0 });
    }

    #[test]
    fn a_view_put_back_never_replaces_one_filed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::default();
        cache.put(b"g1", 5, 100, view(&dir, b"g1"));
        cache.put_back(b"g1", 4, 100, view(&dir, b"g1"));
        assert!(cache.take(b"g1", 5).is_some(), "the newer view stayed");
        cache.put_back(b"g1", 5, 100, view(&dir, b"g1"));
        assert!(cache.take(b"g1", 5).is_some(), "put back where nothing was kept");
    }

    #[test]
    fn a_view_filed_again_counts_as_new_for_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::with_budget(250);
        cache.put(b"g1", 1, 100, view(&dir, b"g1"));
        cache.put(b"g2", 1, 100, view(&dir, b"g2"));
        // g1 is taken by a commit and filed again: now g2 is the oldest.
        let g1 = cache.take(b"g1", 1).unwrap();
        cache.put(b"g1", 2, 100, g1);
        cache.put(b"g3", 1, 100, view(&dir, b"g3"));
        assert!(cache.take(b"g2", 1).is_none(), "the oldest filing went");
        assert!(cache.take(b"g1", 2).is_some(), "the busy group stayed");
    }
}
