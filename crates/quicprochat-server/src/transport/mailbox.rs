//! Push mailboxes, one per push subscription. The send path drops each
//! recipient's freshly stored entry into that recipient's mailboxes, so a
//! push normally needs no storage read. Whatever a mailbox cannot vouch for
//! (it overflowed, a seq is missing between two entries, or a commit only
//! woke it) makes its push task re-read the queue by cursor: the mailbox is
//! a shortcut past the store, never the source of truth.
//!
//! Only durable entries are put in a mailbox (the send path calls
//! [`Mailboxes::deliver`] after the store acknowledged the write), so a
//! re-read always finds at least what the mailbox held.
//!
//! An account holds at most [`MAX_SUBSCRIPTIONS_PER_ACCOUNT`] mailboxes: a
//! new subscription past that ends the account's oldest (its push task
//! stops), so subscribing many times holds no more than that many push
//! tasks and batches. [`Mailboxes::end_user`] ends all of an account's
//! subscriptions (a disabled account).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use quicprochat_proto::v1;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Push subscriptions one account may hold at once (every connection has
/// at most one; see `push`).
pub(crate) const MAX_SUBSCRIPTIONS_PER_ACCOUNT: usize = 8;

/// Entries one mailbox holds before it drops them and asks for a re-read.
const MAILBOX_ENTRIES: usize = 256;
/// Payload bytes one mailbox holds before it does the same.
const MAILBOX_BYTES: usize = 4 * 1024 * 1024;

/// A stored message as pushed, shared by all its recipients: their entries
/// differ only by seq, which the push task fills in.
pub(crate) type SharedEntry = Arc<v1::QueueEntry>;

#[derive(Default)]
struct Inbox {
    entries: VecDeque<(u64, SharedEntry)>,
    bytes: usize,
    /// Something was not put in `entries`: the queue must be re-read.
    reread: bool,
}

/// What a push task takes out of its mailbox.
pub(crate) struct Taken {
    /// `(seq, entry)` in the order they were delivered (not always seq order).
    pub(crate) entries: Vec<(u64, SharedEntry)>,
    /// The queue holds entries the mailbox does not: re-read it.
    pub(crate) reread: bool,
}

/// One push subscription's mailbox.
#[derive(Default)]
pub(crate) struct Mailbox {
    inbox: Mutex<Inbox>,
    wake: Notify,
    /// Cancelled when the subscription must end (replaced, evicted, the
    /// account disabled); its push task watches it.
    ended: CancellationToken,
}

impl Mailbox {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // The inbox stays consistent under a panic elsewhere (each update is
        // a push or a flag), so a poisoned lock is still usable.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, seq: u64, entry: &SharedEntry) {
        {
            let mut inbox = self.inbox();
            let size = entry.payload.len();
            if inbox.reread
                || inbox.entries.len() >= MAILBOX_ENTRIES
                || inbox.bytes.saturating_add(size) > MAILBOX_BYTES
            {
                inbox.entries.clear();
                inbox.bytes = 0;
                inbox.reread = true;
            } else {
                inbox.entries.push_back((seq, Arc::clone(entry)));
                inbox.bytes += size;
            }
        }
        // One task per mailbox: `notify_one` keeps the wake-up if that task
        // is not waiting yet.
        self.wake.notify_one();
    }

    fn ask_reread(&self) {
        {
            let mut inbox = self.inbox();
            inbox.entries.clear();
            inbox.bytes = 0;
            inbox.reread = true;
        }
        self.wake.notify_one();
    }

    /// Takes everything delivered so far.
    pub(crate) fn take(&self) -> Taken {
        let mut inbox = self.inbox();
        let entries = inbox.entries.drain(..).collect();
        inbox.bytes = 0;
        Taken { entries, reread: std::mem::take(&mut inbox.reread) }
    }

    /// Returns once something was delivered after the last wake-up.
    pub(crate) async fn delivered(&self) {
        self.wake.notified().await;
    }

    /// Ends the subscription: its push task stops.
    pub(crate) fn end(&self) {
        self.ended.cancel();
    }

    /// Returns once the subscription was ended.
    pub(crate) async fn ended(&self) {
        self.ended.cancelled().await;
    }

    /// Whether the subscription was ended.
    #[cfg(test)]
    fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }
}

/// Every push subscription's mailbox, by device queue.
#[derive(Default)]
pub(crate) struct Mailboxes {
    /// Read-locked by every hand-over (each mailbox has its own lock),
    /// write-locked only to register or drop a subscription.
    by_user: RwLock<HashMap<String, Vec<Arc<Mailbox>>>>,
}

/// A subscription's mailbox, registered until this is dropped.
pub(crate) struct Registration<'a> {
    mailboxes: &'a Mailboxes,
    queue: String,
    mailbox: Arc<Mailbox>,
}

impl Registration<'_> {
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.mailboxes.map_mut();
        if let Some(list) = map.get_mut(&self.queue) {
            list.retain(|mailbox| !Arc::ptr_eq(mailbox, &self.mailbox));
            if list.is_empty() {
                map.remove(&self.queue);
            }
        }
    }
}

impl Mailboxes {
    // Each update is one insert or removal, consistent under a panic elsewhere.
    fn map(&self) -> RwLockReadGuard<'_, HashMap<String, Vec<Arc<Mailbox>>>> {
        self.by_user.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn map_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, Vec<Arc<Mailbox>>>> {
        self.by_user.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new mailbox for the device queue `queue`. Register *before*
    /// reading the queue: an entry stored after the read then reaches the
    /// mailbox, and one stored before it is found by the read.
    /// Past [`MAX_SUBSCRIPTIONS_PER_ACCOUNT`], the account's oldest
    /// mailbox is ended and dropped from the map.
    /// `ended` is the subscription's end signal (the connection ends it
    /// when a new `Subscribe` replaces it).
    pub(crate) fn register(&self, queue: &str, ended: CancellationToken) -> Registration<'_> {
        let mailbox = Arc::new(Mailbox { ended, ..Mailbox::default() });
        let mut map = self.map_mut();
        let list = map.entry(queue.to_owned()).or_default();
        while list.len() >= MAX_SUBSCRIPTIONS_PER_ACCOUNT {
            list.remove(0).end();
        }
        list.push(Arc::clone(&mailbox));
        drop(map);
        Registration { mailboxes: self, queue: queue.to_owned(), mailbox }
    }

    /// Ends every subscription of the device queue `queue` (a removed device).
    pub(crate) fn end_queue(&self, queue: &str) {
        for mailbox in self.map().get(queue).into_iter().flatten() {
            mailbox.end();
        }
    }

    /// Ends every subscription of every device of `username` (say, a
    /// disabled account): the queues named `username` and `username#...`.
    pub(crate) fn end_user(&self, username: &str) {
        let of_user =
            |queue: &str| queue.strip_prefix(username).is_some_and(|rest| rest.is_empty() || rest.starts_with('#'));
        for (_, list) in self.map().iter().filter(|(queue, _)| of_user(queue)) {
            for mailbox in list {
                mailbox.end();
            }
        }
    }

    /// Hands a stored message to its recipients' mailboxes: `deliveries`
    /// are `(recipient, seq)` of the queue entries just made durable.
    pub(crate) fn deliver(&self, entry: &SharedEntry, deliveries: &[(String, u64)]) {
        let map = self.map();
        for (queue, seq) in deliveries {
            for mailbox in map.get(queue).into_iter().flatten() {
                mailbox.put(*seq, entry);
            }
        }
    }

    /// Wakes these users' push tasks to re-read their queues (for entries
    /// the caller does not hand over, such as commits and welcomes).
    pub(crate) fn wake<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let map = self.map();
        for queue in queues {
            for mailbox in map.get(queue).into_iter().flatten() {
                mailbox.ask_reread();
            }
        }
    }

    /// Users with at least one push subscription.
    #[cfg(test)]
    fn subscribed_users(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: usize) -> SharedEntry {
        Arc::new(v1::QueueEntry { payload: vec![7u8; payload].into(), ..Default::default() })
    }

    fn seqs(taken: &Taken) -> Vec<u64> {
        taken.entries.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn delivers_to_every_mailbox_of_a_recipient_and_no_one_else() {
        let mailboxes = Mailboxes::default();
        let first = mailboxes.register("alice", CancellationToken::new());
        let second = mailboxes.register("alice", CancellationToken::new());
        let other = mailboxes.register("bob", CancellationToken::new());
        mailboxes.deliver(&entry(10), &[("alice".into(), 4), ("carol".into(), 9)]);
        assert_eq!(seqs(&first.mailbox().take()), [4]);
        assert_eq!(seqs(&second.mailbox().take()), [4]);
        let untouched = other.mailbox().take();
        assert!(untouched.entries.is_empty() && !untouched.reread);
    }

    #[test]
    fn dropping_a_registration_removes_its_mailbox() {
        let mailboxes = Mailboxes::default();
        let first = mailboxes.register("alice", CancellationToken::new());
        let second = mailboxes.register("alice", CancellationToken::new());
        drop(first);
        assert_eq!(mailboxes.subscribed_users(), 1);
        mailboxes.deliver(&entry(1), &[("alice".into(), 1)]);
        assert_eq!(seqs(&second.mailbox().take()), [1]);
        drop(second);
        assert_eq!(mailboxes.subscribed_users(), 0);
    }

    #[test]
    fn overflow_by_count_turns_into_a_reread() {
        let mailboxes = Mailboxes::default();
        let registration = mailboxes.register("alice", CancellationToken::new());
        for seq in 1..=MAILBOX_ENTRIES as u64 + 1 {
            mailboxes.deliver(&entry(1), &[("alice".into(), seq)]);
        }
        let taken = registration.mailbox().take();
        assert!(taken.reread);
        assert!(taken.entries.is_empty());
        // Taking clears the flag; new deliveries are kept again.
        mailboxes.deliver(&entry(1), &[("alice".into(), 300)]);
        let next = registration.mailbox().take();
        assert!(!next.reread);
        assert_eq!(seqs(&next), [300]);
    }

    #[test]
    fn overflow_by_bytes_turns_into_a_reread() {
        let mailboxes = Mailboxes::default();
        let registration = mailboxes.register("alice", CancellationToken::new());
        mailboxes.deliver(&entry(MAILBOX_BYTES - 10), &[("alice".into(), 1)]);
        mailboxes.deliver(&entry(11), &[("alice".into(), 2)]);
        let taken = registration.mailbox().take();
        assert!(taken.reread && taken.entries.is_empty());
    }

    #[test]
    fn wake_asks_for_a_reread_and_drops_held_entries() {
        let mailboxes = Mailboxes::default();
        let registration = mailboxes.register("alice", CancellationToken::new());
        mailboxes.deliver(&entry(1), &[("alice".into(), 1)]);
        mailboxes.wake(["alice"]);
        // Held until the re-read: later entries are not kept either.
        mailboxes.deliver(&entry(1), &[("alice".into(), 2)]);
        let taken = registration.mailbox().take();
        assert!(taken.reread && taken.entries.is_empty());
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_subscriptions() {
        let mailboxes = Mailboxes::default();
        let registrations: Vec<_> = (0..MAX_SUBSCRIPTIONS_PER_ACCOUNT + 2)
            .map(|_| mailboxes.register("mallory", CancellationToken::new()))
            .collect();
        let ended = registrations.iter().filter(|registration| registration.mailbox().is_ended()).count();
        assert_eq!(ended, 2, "the two oldest were ended");
        assert!(registrations[0].mailbox().is_ended() && registrations[1].mailbox().is_ended());
        mailboxes.deliver(&entry(1), &[("mallory".into(), 1)]);
        assert!(registrations[0].mailbox().take().entries.is_empty(), "an ended mailbox gets nothing");
        assert_eq!(seqs(&registrations[2].mailbox().take()), [1]);
        let bystander = mailboxes.register("bob", CancellationToken::new());
        assert!(!bystander.mailbox().is_ended());
        drop(registrations);
        assert_eq!(mailboxes.subscribed_users(), 1, "only bob's");
    }

    #[test]
    fn end_user_ends_every_subscription_of_that_user_only() {
        let mailboxes = Mailboxes::default();
        let first = mailboxes.register("alice", CancellationToken::new());
        let second = mailboxes.register("alice", CancellationToken::new());
        let other = mailboxes.register("bob", CancellationToken::new());
        mailboxes.end_user("alice");
        assert!(first.mailbox().is_ended() && second.mailbox().is_ended());
        assert!(!other.mailbox().is_ended());
    }

    #[tokio::test]
    async fn a_delivery_before_waiting_is_not_missed() {
        let mailboxes = Mailboxes::default();
        let registration = mailboxes.register("alice", CancellationToken::new());
        mailboxes.deliver(&entry(1), &[("alice".into(), 1)]);
        tokio::time::timeout(std::time::Duration::from_secs(5), registration.mailbox().delivered())
            .await
            .expect("the stored wake-up is returned at once");
    }
}
