//! Key packages, per device: uploads (validated, made by the uploading
//! device, stored in that device's stock), single-use fetches that serve one
//! package per current device of the target, each device keeping a
//! last-resort package, and stock reports of the caller's device.
//!
//! Rate limiting of fetches (per requester and per target) is stateful and
//! time-based, so it lives in the transport, not here; the transport's
//! last-resort budget comes in as a [`LastResortBudget`].

use quicprochat_core::ds::{check_key_package_lifetime, validate_key_package, KeyPackageInfo};
use quicprochat_core::names::Naming;
use quicprochat_core::DeviceId;

use super::commits::CommitPolicy;
use super::devices::{current_device, session_device, Caller};
use super::DomainError;
use crate::storage::{Account, Device, KeyPackageServed, KeyPackageStock, KeyPackagesAdded, NewKeyPackage, Store};

/// Clients refill their stock when it falls below this.
pub const LOW_WATER: u32 = 10;

/// Most ordinary key packages accepted in one upload.
pub const MAX_UPLOAD: usize = 100;

/// Most ordinary key packages the server keeps per device.
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

/// A key package served to a requester: one device's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKeyPackage {
    /// The device of the target that made it (and whose stock it came from).
    pub device_id: DeviceId,
    pub key_package: Vec<u8>,
    /// Whether it is that device's last-resort package (kept, served again).
    pub last_resort: bool,
}

/// Checks one uploaded package: valid, owned by `account`, made by the
/// uploading device (`caller`, a current device: each device uploads its
/// own), in the right slot.
fn check_package(
    store: &dyn Store,
    caller: Caller<'_>,
    home: Option<&str>,
    account: &Account,
    bytes: &[u8],
    slot: &str,
    expect_last_resort: bool,
) -> Result<NewKeyPackage, DomainError> {
    let info = validate_key_package(bytes).map_err(|error| DomainError::from_ds(slot, error))?;
    if Naming::at_home(home).read(&info.username) != account.username {
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
    Ok(NewKeyPackage { data: bytes.to_vec(), init_key: info.init_key })
}

/// Adds validated key packages of the caller's device to its stock and,
/// when given, replaces its last-resort package. All-or-nothing: one bad
/// package rejects the call.
/// `home`: this server's domain when it federates; a package may then name
/// its owner `name@home` as well as `name`.
pub fn upload(
    store: &dyn Store,
    caller: Caller<'_>,
    key_packages: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    home: Option<&str>,
) -> Result<StockReport, DomainError> {
    if key_packages.len() > MAX_UPLOAD {
        return Err(DomainError::invalid(format!(
            "at most {MAX_UPLOAD} key packages per upload, got {}",
            key_packages.len()
        )));
    }
    let account = session_device(store, caller)?;
    let device = current_device(store, caller)?;
    let checked = key_packages
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            check_package(store, caller, home, &account, bytes, &format!("key package {index}"), false)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let last_resort = last_resort
        .map(|bytes| check_package(store, caller, home, &account, bytes, "last-resort key package", true))
        .transpose()?;
    match store.add_key_packages(caller.username, &device.device_id, &checked, last_resort.as_ref(), MAX_STOCK)? {
        KeyPackagesAdded::Stored(stock) => Ok(stock.into()),
        KeyPackagesAdded::InitKeyInUse => Err(DomainError::AlreadyExists {
            message: "a key package's init key was uploaded before; every key package must be new".to_owned(),
        }),
        KeyPackagesAdded::StockFull { count } => Err(DomainError::ResourceExhausted {
            message: format!("at most {MAX_STOCK} key packages are kept per device, this one has {count}"),
            retry_after_ms: 0,
        }),
    }
}

/// Ordinary packages one fetch may discard per device because they expire
/// too soon (or are not the device's own).
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

/// `key_package`'s details if it may be served as `device`'s under
/// `policy`: usable ([`usable_info`]) and made by that very device (its
/// key, not only its id). Only current devices are asked for, so a removed
/// device's packages are never served.
fn usable_for(key_package: &[u8], device: &Device, policy: &CommitPolicy) -> Option<KeyPackageInfo> {
    usable_info(key_package, policy).filter(|info| info.device_key == device.device_key)
}

/// Checks key packages a peer served for its user `target` (`name@domain`)
/// to our user `requester`, and records them as served, so one commit of
/// `requester`'s may add each (see [`fetch`]). A package that is not
/// valid, or names anyone but `target`, refuses the whole answer.
pub fn record_claimed(
    store: &dyn Store,
    requester: &str,
    target: &str,
    key_packages: &[Vec<u8>],
    last_resort: bool,
    policy: &CommitPolicy,
) -> Result<(), DomainError> {
    let mut checked = Vec::with_capacity(key_packages.len());
    for bytes in key_packages {
        let info = validate_key_package(bytes).map_err(|error| DomainError::from_ds("a served key package", error))?;
        if info.username != target {
            return Err(DomainError::denied(format!(
                "the server of {target} served a key package naming {:?}",
                info.username
            )));
        }
        checked.push(info);
    }
    for info in checked {
        record_served(store, requester, target, info, last_resort, policy)?;
    }
    Ok(())
}

/// Records that `requester` was served the package of `target` whose
/// details are `info`, so one commit of theirs may add that device with it.
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
/// the last-resort packages of the fetch and nothing is recorded for them.
pub type LastResortBudget<'a> = &'a (dyn Fn() -> Result<(), DomainError> + Send + Sync);

/// A fetch's last-resort budget, asked at most once: one fetch adds the
/// target once, however many of its devices answer with a last-resort
/// package.
struct BudgetOnce<'a> {
    budget: LastResortBudget<'a>,
    answer: Option<Result<(), DomainError>>,
}

impl<'a> BudgetOnce<'a> {
    fn new(budget: LastResortBudget<'a>) -> Self {
        BudgetOnce { budget, answer: None }
    }

    /// Whether this fetch may serve last-resort packages (asks the budget
    /// the first time).
    fn allows(&mut self) -> bool {
        self.answer.get_or_insert_with(|| (self.budget)()).is_ok()
    }

    /// What a fetch that served nothing fails with: the budget's refusal if
    /// it refused, else `none_left`.
    fn failure(self, none_left: DomainError) -> DomainError {
        match self.answer {
            Some(Err(refusal)) => refusal,
            _ => none_left,
        }
    }
}

/// The devices of `target` a fetch serves: every current one in device
/// order, or only `device` (which must be a current device of `target`).
fn devices_to_serve(store: &dyn Store, target: &str, device: Option<DeviceId>) -> Result<Vec<Device>, DomainError> {
    let target_account = store
        .get_account(target)?
        .filter(|account| !account.disabled)
        .ok_or_else(|| DomainError::not_found(format!("no user named {target:?}")))?;
    let current = store.devices(&target_account.username)?.into_iter().filter(Device::is_current);
    let Some(device_id) = device else {
        return Ok(current.collect());
    };
    let named: Vec<Device> = current.filter(|device| device.device_id == device_id).collect();
    if named.is_empty() {
        return Err(DomainError::not_found(format!("{target:?} has no device {device_id}")));
    }
    Ok(named)
}

fn none_left(target: &str) -> DomainError {
    DomainError::not_found(format!("{target:?} has no usable key package left"))
}

/// Consumes one key package of each current device of `target` (or of
/// `device` only) for `requester`, in device order; devices with no usable
/// package are skipped, and the fetch fails with `NOT_FOUND` when none had
/// one. Packages that expire too soon to be added under `policy` are
/// discarded on the way (the owner's device refills when its stock runs
/// low); a last-resort package that expires too soon is not served, nor
/// any past `last_resort_budget` (asked once per fetch; its refusal is the
/// error when nothing else was served).
pub fn fetch(
    store: &dyn Store,
    caller: Caller<'_>,
    target: &str,
    device: Option<DeviceId>,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<Vec<FetchedKeyPackage>, DomainError> {
    session_device(store, caller)?;
    let request = FetchFor { requester: caller.username, target, device, named_at: None };
    fetch_for(store, &request, policy, last_resort_budget)
}

/// Who a fetch serves, and what it serves.
#[derive(Debug, Clone, Copy)]
pub struct FetchFor<'a> {
    /// The requester: an account here, or `name@domain` of a peer.
    pub requester: &'a str,
    /// The account whose packages are served.
    pub target: &'a str,
    /// Only this device's, or every current device's.
    pub device: Option<DeviceId>,
    /// For a peer: only packages naming the target `target@named_at` are
    /// served (a bare name would read as a user of the group's hub there);
    /// others are discarded on the way.
    pub named_at: Option<&'a str>,
}

/// [`fetch`] for any requester (a peer's user claiming through its server).
pub fn fetch_for(
    store: &dyn Store,
    request: &FetchFor<'_>,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<Vec<FetchedKeyPackage>, DomainError> {
    let target = request.target;
    let devices = devices_to_serve(store, target, request.device)?;
    let named = request.named_at.map(|domain| format!("{target}@{domain}"));
    let mut fetch = Fetch {
        store,
        requester: request.requester,
        target,
        named: named.as_deref(),
        policy,
        budget: BudgetOnce::new(last_resort_budget),
    };
    let mut fetched = Vec::new();
    for device in &devices {
        if let Some(package) = fetch.take_usable(device)? {
            fetched.push(package);
        }
    }
    if fetched.is_empty() {
        return Err(fetch.budget.failure(none_left(target)));
    }
    Ok(fetched)
}

/// One [`fetch`] of `target`'s packages for `requester`.
struct Fetch<'a> {
    store: &'a dyn Store,
    requester: &'a str,
    target: &'a str,
    /// The credential name every package served must carry, if any.
    named: Option<&'a str>,
    policy: &'a CommitPolicy,
    budget: BudgetOnce<'a>,
}

impl Fetch<'_> {
    /// Takes `device`'s next usable package, if it has one.
    fn take_usable(&mut self, device: &Device) -> Result<Option<FetchedKeyPackage>, DomainError> {
        for _ in 0..MAX_DISCARDED_PER_FETCH {
            let Some(taken) = self.store.take_key_package(self.target, &device.device_id)? else {
                return Ok(None);
            };
            let usable = usable_for(&taken.key_package, device, self.policy)
                .filter(|info| self.named.is_none_or(|name| info.username == name));
            match usable {
                Some(info) => {
                    if taken.last_resort && !self.budget.allows() {
                        return Ok(None);
                    }
                    record_served(self.store, self.requester, self.target, info, taken.last_resort, self.policy)?;
                    return Ok(Some(FetchedKeyPackage {
                        device_id: device.device_id,
                        key_package: taken.key_package,
                        last_resort: taken.last_resort,
                    }));
                }
                // The last-resort package is kept: taking it again gives it again.
                None if taken.last_resort => return Ok(None),
                None => tracing::debug!(
                    user = %self.target,
                    device = %device.device_id,
                    "discarded a key package that expires too soon, is not the device's own, or lacks the domain"
                ),
            }
        }
        Ok(None)
    }
}

/// Serves the last-resort package of each current device of `target` (or
/// of `device` only) without touching their stocks: the answer when the
/// per-target rate limit is exhausted, so an attacker draining a victim's
/// packages cannot block legitimate adds. Devices without a usable one are
/// skipped; `NOT_FOUND` when none had one, the budget's refusal when it
/// refused.
pub fn fetch_last_resort(
    store: &dyn Store,
    caller: Caller<'_>,
    target: &str,
    device: Option<DeviceId>,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<Vec<FetchedKeyPackage>, DomainError> {
    session_device(store, caller)?;
    let request = FetchFor { requester: caller.username, target, device, named_at: None };
    fetch_last_resort_for(store, &request, policy, last_resort_budget)
}

/// [`fetch_last_resort`] for any requester (see [`fetch_for`]).
pub fn fetch_last_resort_for(
    store: &dyn Store,
    request: &FetchFor<'_>,
    policy: &CommitPolicy,
    last_resort_budget: LastResortBudget<'_>,
) -> Result<Vec<FetchedKeyPackage>, DomainError> {
    let target = request.target;
    let devices = devices_to_serve(store, target, request.device)?;
    let named = request.named_at.map(|domain| format!("{target}@{domain}"));
    let mut usable = Vec::new();
    for device in &devices {
        let Some(key_package) = store.last_resort_key_package(target, &device.device_id)? else {
            continue;
        };
        let info = usable_for(&key_package, device, policy)
            .filter(|info| named.as_deref().is_none_or(|name| info.username == name));
        if let Some(info) = info {
            usable.push((device.device_id, key_package, info));
        }
    }
    if usable.is_empty() {
        return Err(none_left(target));
    }
    last_resort_budget()?;
    let mut fetched = Vec::with_capacity(usable.len());
    for (device_id, key_package, info) in usable {
        record_served(store, request.requester, target, info, true, policy)?;
        fetched.push(FetchedKeyPackage { device_id, key_package, last_resort: true });
    }
    Ok(fetched)
}

/// The stock of the caller's device. A last-resort package that expires
/// too soon to be added under `policy` counts as none, so the client
/// uploads a fresh one.
pub fn stock(store: &dyn Store, caller: Caller<'_>, policy: &CommitPolicy) -> Result<StockReport, DomainError> {
    let device = current_device(store, caller)?;
    Ok(usable_stock(store, caller.username, &device.device_id, policy)?.into())
}

/// The stored stock of `username`'s device `device_id`, its last-resort
/// package counted only while it may be added under `policy`.
pub(crate) fn usable_stock(
    store: &dyn Store,
    username: &str,
    device_id: &DeviceId,
    policy: &CommitPolicy,
) -> Result<KeyPackageStock, DomainError> {
    let mut stock = store.key_package_stock(username, device_id)?;
    if stock.has_last_resort {
        stock.has_last_resort =
            store.last_resort_key_package(username, device_id)?.is_some_and(|kp| usable_info(&kp, policy).is_some());
    }
    Ok(stock)
}
