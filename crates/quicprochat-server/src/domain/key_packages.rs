//! Key packages: uploads (validated, owned by the uploader), single-use
//! fetches with a kept last-resort package, and stock reports.
//!
//! Rate limiting of fetches (per requester and per target) is stateful and
//! time-based, so it lives in the transport, not here.

use quicprochat_core::ds::{check_key_package_lifetime, validate_key_package, KeyPackageInfo};

use super::commits::CommitPolicy;
use super::devices::{require_current_device, session_device, Caller};
use super::DomainError;
use crate::storage::{Account, KeyPackageServed, KeyPackageStock, KeyPackagesAdded, NewKeyPackage, Store};

/// Clients refill their stock when it falls below this.
pub const LOW_WATER: u32 = 10;

/// Most ordinary key packages accepted in one upload.
pub const MAX_UPLOAD: usize = 100;

/// Most ordinary key packages the server keeps per account.
pub const MAX_STOCK: u64 = 1000;

/// Stock as reported to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockReport {
    /// Ordinary packages left (last resort excluded).
    pub stock: u32,
    pub low_water: u32,
    pub has_last_resort: bool,
}

impl From<KeyPackageStock> for StockReport {
    fn from(stock: KeyPackageStock) -> Self {
        StockReport {
            stock: u32::try_from(stock.count).unwrap_or(u32::MAX),
            low_water: LOW_WATER,
            has_last_resort: stock.has_last_resort,
        }
    }
}

/// A key package served to a requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKeyPackage {
    pub key_package: Vec<u8>,
    pub last_resort: bool,
}

/// Checks one uploaded package: valid, owned by `account`, made by the
/// uploading device (`caller`, a current device: each device uploads its
/// own), in the right slot.
fn check_package(
    store: &dyn Store,
    caller: Caller<'_>,
    account: &Account,
    bytes: &[u8],
    slot: &str,
    expect_last_resort: bool,
) -> Result<NewKeyPackage, DomainError> {
    let info = validate_key_package(bytes).map_err(|error| DomainError::from_ds(slot, error))?;
    if info.username != account.username {
        return Err(DomainError::denied(format!("{slot} has credential {:?}, not yours", info.username)));
    }
    if info.identity_key != account.identity_key {
        return Err(DomainError::denied(format!("{slot} is signed by another identity key than your account's")));
    }
    match store.device_by_key(&account.username, &info.device_key)? {
        Some(device) if !device.is_current() => {
            return Err(DomainError::denied(format!("{slot} is from a device removed from your account")))
        }
        Some(device) if device.queue != caller.queue => {
            return Err(DomainError::denied(format!("{slot} is another device's; each device uploads its own")))
        }
        Some(_) => {}
        None => return Err(DomainError::denied(format!("{slot} is not from a device of your account"))),
    }
    if info.last_resort != expect_last_resort {
        let message = if expect_last_resort {
            format!("{slot} lacks the last-resort extension")
        } else {
            format!("{slot} is a last-resort package; upload it in the last_resort slot")
        };
        return Err(DomainError::invalid(message));
    }
    Ok(NewKeyPackage { data: bytes.to_vec(), device_id: info.device_id(), init_key: info.init_key })
}

/// Adds validated key packages of `session_user` and, when given, replaces
/// its last-resort package. All-or-nothing: one bad package rejects the call.
pub fn upload(
    store: &dyn Store,
    caller: Caller<'_>,
    key_packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
) -> Result<StockReport, DomainError> {
    let session_user = caller.username;
    if key_packages.len() > MAX_UPLOAD {
        return Err(DomainError::invalid(format!(
            "at most {MAX_UPLOAD} key packages per upload, got {}",
            key_packages.len()
        )));
    }
    let account = session_device(store, caller)?;
    let checked = key_packages
        .iter()
        .enumerate()
        .map(|(index, bytes)| check_package(store, caller, &account, bytes, &format!("key package {index}"), false))
        .collect::<Result<Vec<_>, _>>()?;
    let last_resort = last_resort
        .map(|bytes| check_package(store, caller, &account, bytes, "last-resort key package", true))
        .transpose()?;
    match store.add_key_packages(session_user, &checked, last_resort.as_ref(), MAX_STOCK)? {
        KeyPackagesAdded::Stored(stock) => Ok(stock.into()),
        KeyPackagesAdded::InitKeyInUse => Err(DomainError::AlreadyExists {
            message: "a key package's init key was uploaded before; every key package must be new".to_owned(),
        }),
        KeyPackagesAdded::StockFull { count } => Err(DomainError::ResourceExhausted {
            message: format!("at most {MAX_STOCK} key packages are kept per account, you have {count}"),
            retry_after_ms: 0,
        }),
    }
}

/// Ordinary packages one fetch may discard because they expire too soon.
const MAX_DISCARDED_PER_FETCH: usize = 64;

/// How long a served key package stays usable by its requester's commit.
pub const SERVED_FOR_MS: u64 = 24 * 3600 * 1000;

/// `key_package`'s details if it may still be added under `policy` (it
/// lasts long enough for every member to process the Add; see
/// [`CommitPolicy`]).
fn usable_info(key_package: &[u8], policy: &CommitPolicy) -> Option<KeyPackageInfo> {
    validate_key_package(key_package).ok().filter(|info| {
        check_key_package_lifetime(info.not_before, info.not_after, policy.now_s, policy.key_package_remaining_s)
            .is_ok()
    })
}

fn usable(key_package: &[u8], policy: &CommitPolicy) -> bool {
    usable_info(key_package, policy).is_some()
}

/// Whether the package described by `info` comes from a current device of
/// `owner` (a removed device's packages are never served; its removal
/// deletes them, this is the check behind that).
fn from_current_device(store: &dyn Store, owner: &str, info: &KeyPackageInfo) -> Result<bool, DomainError> {
    Ok(matches!(store.device_by_key(owner, &info.device_key)?, Some(device) if device.is_current()))
}

/// Records that `requester` was served the package of `target` whose
/// details are `info`, so one commit of theirs may add `target` with it.
fn record_served(
    store: &dyn Store,
    requester: &str,
    target: &str,
    info: KeyPackageInfo,
    last_resort: bool,
    policy: &CommitPolicy,
) -> Result<(), DomainError> {
    let now_ms = policy.now_s.saturating_mul(1000);
    let served = KeyPackageServed {
        requester: requester.to_owned(),
        init_key: info.init_key,
        target: target.to_owned(),
        last_resort,
        served_at_ms: now_ms,
    };
    Ok(store.record_served(&served, now_ms.saturating_sub(SERVED_FOR_MS))?)
}

/// Asked just before a last-resort package is served (the transport's
/// per-pair budget, `RateLimiters::check_last_resort`); an error refuses
/// the fetch and nothing is recorded.
pub type LastResortBudget<'a> = &'a (dyn Fn() -> Result<(), DomainError> + Send + Sync);

/// Consumes one key package of `target` for `requester`. Packages that
/// expire too soon to be added under `policy` are discarded on the way
/// (the owner's client refills when its stock runs low); a last-resort
/// package that expires too soon is not served, nor one past
/// `last_resort_budget`.
pub fn fetch(
    store: &dyn Store,
    caller: Caller<'_>,
    target: &str,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<FetchedKeyPackage, DomainError> {
    session_device(store, caller)?;
    let requester = caller.username;
    let target_account = store
        .get_account(target)?
        .filter(|account| !account.disabled)
        .ok_or_else(|| DomainError::not_found(format!("no user named {target:?}")))?;
    let none_left = || DomainError::not_found(format!("{target:?} has no usable key package left"));
    for _ in 0..MAX_DISCARDED_PER_FETCH {
        let taken = store.take_key_package(&target_account.username)?.ok_or_else(none_left)?;
        let usable = match usable_info(&taken.key_package, policy) {
            Some(info) if from_current_device(store, target, &info)? => Some(info),
            _ => None,
        };
        if let Some(info) = usable {
            if taken.last_resort {
                last_resort_budget()?;
            }
            record_served(store, requester, target, info, taken.last_resort, policy)?;
            return Ok(FetchedKeyPackage { key_package: taken.key_package, last_resort: taken.last_resort });
        }
        if taken.last_resort {
            return Err(none_left());
        }
        tracing::debug!(user = %target, "discarded a key package that expires too soon or whose device was removed");
    }
    Err(none_left())
}

/// Serves `target`'s last-resort package without touching its stock: the
/// answer when the per-target rate limit is exhausted, so an attacker
/// draining a victim's packages cannot block legitimate adds.
pub fn fetch_last_resort(
    store: &dyn Store,
    caller: Caller<'_>,
    target: &str,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<FetchedKeyPackage, DomainError> {
    session_device(store, caller)?;
    let requester = caller.username;
    let target_account = store
        .get_account(target)?
        .filter(|account| !account.disabled)
        .ok_or_else(|| DomainError::not_found(format!("no user named {target:?}")))?;
    let none_left = || DomainError::not_found(format!("{target:?} has no usable key package left"));
    let key_package = store.last_resort_key_package(&target_account.username)?.ok_or_else(none_left)?;
    let info = usable_info(&key_package, policy).ok_or_else(none_left)?;
    if !from_current_device(store, target, &info)? {
        return Err(none_left());
    }
    last_resort_budget()?;
    record_served(store, requester, target, info, true, policy)?;
    Ok(FetchedKeyPackage { key_package, last_resort: true })
}

/// The stock of `session_user`. A last-resort package that expires too
/// soon to be added under `policy` counts as none, so the client uploads
/// a fresh one.
pub fn stock(store: &dyn Store, caller: Caller<'_>, policy: &CommitPolicy) -> Result<StockReport, DomainError> {
    require_current_device(store, caller)?;
    Ok(usable_stock(store, caller.username, policy)?.into())
}

/// The stored stock of `username`, its last-resort package counted only
/// while it may be added under `policy`.
pub(crate) fn usable_stock(
    store: &dyn Store,
    username: &str,
    policy: &CommitPolicy,
) -> Result<KeyPackageStock, DomainError> {
    let mut stock = store.key_package_stock(username)?;
    if stock.has_last_resort {
        stock.has_last_resort = store.last_resort_key_package(username)?.is_some_and(|kp| usable(&kp, policy));
    }
    Ok(stock)
}
