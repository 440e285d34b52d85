//! Account and key package queries. Callers provide the transaction; these
//! functions only run statements.

use rusqlite::{params, Connection, OptionalExtension};

use quicprochat_core::DeviceId;

use super::SqlResultExt;
use crate::storage::{queue_name, DeviceAdded, DeviceRemoval, NewDevice};
use crate::storage::{
    Account, AccountCreation, Device, KeyPackageServed, KeyPackageStock, KeyPackagesAdded, NewKeyPackage, StoreError,
    TakenKeyPackage, FIRST_DEVICE_LABEL,
};

pub(super) fn create_account(
    connection: &Connection,
    username: &str,
    identity_key: &[u8],
    created_at_ms: u64,
) -> Result<AccountCreation, StoreError> {
    let inserted = connection
        .prepare_cached(
            "INSERT INTO accounts (username, identity_key, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO NOTHING",
        )
        .and_then(|mut statement| statement.execute(params![username, identity_key, created_at_ms]))
        .during("create_account")?;
    if inserted == 0 {
        return Ok(AccountCreation::UsernameTaken);
    }
    // Its first device is keyed by the account key, and its queue is named
    // after the account.
    let device_id = DeviceId::of_key(identity_key);
    connection
        .prepare_cached(
            "INSERT INTO devices (queue, username, device_id, device_key, label, created_at_ms)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                username,
                device_id.as_bytes().as_slice(),
                identity_key,
                FIRST_DEVICE_LABEL,
                created_at_ms
            ])
        })
        .during("create_account")?;
    Ok(AccountCreation::Created)
}

/// The devices of `username` (removed ones included), oldest first.
pub(super) fn devices(connection: &Connection, username: &str) -> Result<Vec<Device>, StoreError> {
    const OPERATION: &str = "devices";
    connection
        .prepare_cached(&format!("{DEVICE_COLUMNS} WHERE username = ?1 ORDER BY created_at_ms, queue"))
        .and_then(|mut statement| {
            statement.query_map(params![username], device_row)?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .during(OPERATION)?
        .into_iter()
        .map(|raw| raw.decode(OPERATION))
        .collect()
}

/// The device whose queue is `queue`, if any.
pub(super) fn device(connection: &Connection, queue: &str) -> Result<Option<Device>, StoreError> {
    const OPERATION: &str = "device";
    connection
        .prepare_cached(&format!("{DEVICE_COLUMNS} WHERE queue = ?1"))
        .and_then(|mut statement| statement.query_row(params![queue], device_row).optional())
        .during(OPERATION)?
        .map(|raw| raw.decode(OPERATION))
        .transpose()
}

/// The device of `username` whose key is `device_key`, if any.
pub(super) fn device_by_key(
    connection: &Connection,
    username: &str,
    device_key: &[u8],
) -> Result<Option<Device>, StoreError> {
    const OPERATION: &str = "device_by_key";
    connection
        .prepare_cached(&format!("{DEVICE_COLUMNS} WHERE username = ?1 AND device_key = ?2"))
        .and_then(|mut statement| statement.query_row(params![username, device_key], device_row).optional())
        .during(OPERATION)?
        .map(|raw| raw.decode(OPERATION))
        .transpose()
}

pub(super) fn add_device(
    connection: &Connection,
    device: &NewDevice,
    max_devices: u64,
) -> Result<DeviceAdded, StoreError> {
    const OPERATION: &str = "add_device";
    if get_account(connection, &device.username)?.is_none() {
        return Ok(DeviceAdded::UnknownAccount);
    }
    if device_by_key(connection, &device.username, &device.device_key)?.is_some() {
        return Ok(DeviceAdded::KeyInUse);
    }
    let current: u64 = connection
        .prepare_cached("SELECT COUNT(*) FROM devices WHERE username = ?1 AND removed_at_ms IS NULL")
        .and_then(|mut statement| statement.query_row(params![device.username], |row| row.get(0)))
        .during(OPERATION)?;
    if current >= max_devices {
        return Ok(DeviceAdded::TooMany { current });
    }
    let queue = queue_name(&device.username, &device.device_id, false);
    connection
        .prepare_cached(
            "INSERT INTO devices (queue, username, device_id, device_key, certificate, label, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                queue,
                device.username,
                device.device_id.as_bytes().as_slice(),
                device.device_key,
                device.certificate,
                device.label,
                device.created_at_ms
            ])
        })
        .during(OPERATION)?;
    Ok(DeviceAdded::Added { queue })
}

pub(super) fn remove_device(
    connection: &Connection,
    username: &str,
    device_id: &DeviceId,
    now_ms: u64,
) -> Result<DeviceRemoval, StoreError> {
    const OPERATION: &str = "remove_device";
    let current: u64 = connection
        .prepare_cached("SELECT COUNT(*) FROM devices WHERE username = ?1 AND removed_at_ms IS NULL")
        .and_then(|mut statement| statement.query_row(params![username], |row| row.get(0)))
        .during(OPERATION)?;
    let queue: Option<String> = connection
        .prepare_cached(
            "UPDATE devices SET removed_at_ms = ?3
             WHERE username = ?1 AND device_id = ?2 AND removed_at_ms IS NULL AND ?4 > 1 RETURNING queue",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![username, device_id.as_bytes().as_slice(), now_ms, current], |row| row.get(0))
                .optional()
        })
        .during(OPERATION)?;
    let Some(queue) = queue else {
        let exists = connection
            .prepare_cached("SELECT 1 FROM devices WHERE username = ?1 AND device_id = ?2 AND removed_at_ms IS NULL")
            .and_then(|mut statement| statement.exists(params![username, device_id.as_bytes().as_slice()]))
            .during(OPERATION)?;
        return Ok(if exists { DeviceRemoval::LastDevice } else { DeviceRemoval::NotFound });
    };
    super::delivery::ack(connection, &queue, i64::MAX as u64)?;
    connection
        .prepare_cached("DELETE FROM key_packages WHERE username = ?1 AND device_id = ?2")
        .and_then(|mut statement| statement.execute(params![username, device_id.as_bytes().as_slice()]))
        .during(OPERATION)?;
    Ok(DeviceRemoval::Removed { queue })
}

const DEVICE_COLUMNS: &str = "SELECT queue, username, device_id, device_key, certificate, label, created_at_ms,
                                     removed_at_ms FROM devices";

/// A device row before its id is checked.
struct RawDevice {
    queue: String,
    username: String,
    device_id: Vec<u8>,
    device_key: Vec<u8>,
    certificate: Option<Vec<u8>>,
    label: String,
    created_at_ms: u64,
    removed_at_ms: Option<u64>,
}

impl RawDevice {
    fn decode(self, operation: &'static str) -> Result<Device, StoreError> {
        let device_id = DeviceId::from_bytes(&self.device_id).ok_or_else(|| StoreError::Corrupt {
            operation,
            detail: format!("device {} has an id of {} bytes", self.queue, self.device_id.len()),
        })?;
        Ok(Device {
            queue: self.queue,
            username: self.username,
            device_id,
            device_key: self.device_key,
            certificate: self.certificate,
            label: self.label,
            created_at_ms: self.created_at_ms,
            removed_at_ms: self.removed_at_ms,
        })
    }
}

fn device_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawDevice> {
    Ok(RawDevice {
        queue: row.get(0)?,
        username: row.get(1)?,
        device_id: row.get(2)?,
        device_key: row.get(3)?,
        certificate: row.get(4)?,
        label: row.get(5)?,
        created_at_ms: row.get(6)?,
        removed_at_ms: row.get(7)?,
    })
}

pub(super) fn get_account(connection: &Connection, username: &str) -> Result<Option<Account>, StoreError> {
    connection
        .prepare_cached("SELECT identity_key, disabled FROM accounts WHERE username = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![username], |row| {
                    Ok(Account { username: username.to_owned(), identity_key: row.get(0)?, disabled: row.get(1)? })
                })
                .optional()
        })
        .during("get_account")
}

pub(super) fn list_accounts(connection: &Connection) -> Result<Vec<Account>, StoreError> {
    const OPERATION: &str = "list_accounts";
    let mut statement = connection
        .prepare_cached("SELECT username, identity_key, disabled FROM accounts ORDER BY username")
        .during(OPERATION)?;
    let rows = statement
        .query_map([], |row| Ok(Account { username: row.get(0)?, identity_key: row.get(1)?, disabled: row.get(2)? }))
        .during(OPERATION)?;
    rows.collect::<Result<Vec<_>, _>>().during(OPERATION)
}

pub(super) fn disabled_accounts(connection: &Connection) -> Result<Vec<String>, StoreError> {
    const OPERATION: &str = "disabled_accounts";
    let mut statement = connection
        .prepare_cached("SELECT username FROM accounts WHERE disabled = 1 ORDER BY username")
        .during(OPERATION)?;
    let rows = statement.query_map([], |row| row.get(0)).during(OPERATION)?;
    rows.collect::<Result<Vec<_>, _>>().during(OPERATION)
}

/// Fails with `UnknownAccount` when `username` has no account.
pub(super) fn require_account(
    connection: &Connection,
    username: &str,
    operation: &'static str,
) -> Result<(), StoreError> {
    let exists = connection
        .prepare_cached("SELECT 1 FROM accounts WHERE username = ?1")
        .and_then(|mut statement| statement.exists(params![username]))
        .during(operation)?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::UnknownAccount { username: username.to_owned() })
    }
}

pub(super) fn set_disabled(connection: &Connection, username: &str, disabled: bool) -> Result<(), StoreError> {
    let updated = connection
        .prepare_cached("UPDATE accounts SET disabled = ?2 WHERE username = ?1")
        .and_then(|mut statement| statement.execute(params![username, disabled]))
        .during("set_account_disabled")?;
    if updated == 0 {
        return Err(StoreError::UnknownAccount { username: username.to_owned() });
    }
    Ok(())
}

pub(super) fn add_key_packages(
    connection: &Connection,
    username: &str,
    device_id: &DeviceId,
    key_packages: &[NewKeyPackage],
    last_resort: Option<&NewKeyPackage>,
    max_stock: u64,
) -> Result<KeyPackagesAdded, StoreError> {
    const OPERATION: &str = "add_key_packages";
    require_account(connection, username, OPERATION)?;
    let device = device_id.as_bytes().as_slice();
    // The cap is checked in the transaction that inserts: concurrent
    // uploads cannot take the stock past it together.
    let stock = key_package_stock(connection, username, device_id, OPERATION)?;
    if stock.count.saturating_add(key_packages.len() as u64) > max_stock {
        return Ok(KeyPackagesAdded::StockFull { count: stock.count });
    }
    // Checked before any write, so a refused upload changes nothing. The
    // last-resort package this call replaces does not count as in use.
    let mut in_use = connection
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM key_packages WHERE init_key = ?1
                            AND NOT (?2 AND username = ?3 AND device_id = ?4 AND last_resort = 1))",
        )
        .during(OPERATION)?;
    let mut seen = std::collections::HashSet::new();
    for new in key_packages.iter().chain(last_resort) {
        let stored: bool = in_use
            .query_row(params![new.init_key, last_resort.is_some(), username, device], |row| row.get(0))
            .during(OPERATION)?;
        if stored || !seen.insert(new.init_key.as_slice()) {
            return Ok(KeyPackagesAdded::InitKeyInUse);
        }
    }
    let mut insert = connection
        .prepare_cached(
            "INSERT INTO key_packages (username, data, last_resort, init_key, device_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .during(OPERATION)?;
    if let Some(last_resort) = last_resort {
        connection
            .prepare_cached("DELETE FROM key_packages WHERE username = ?1 AND device_id = ?2 AND last_resort = 1")
            .and_then(|mut statement| statement.execute(params![username, device]))
            .during(OPERATION)?;
        insert.execute(params![username, last_resort.data, true, last_resort.init_key, device]).during(OPERATION)?;
    }
    for new in key_packages {
        insert.execute(params![username, new.data, false, new.init_key, device]).during(OPERATION)?;
    }
    key_package_stock(connection, username, device_id, OPERATION).map(KeyPackagesAdded::Stored)
}

pub(super) fn take_key_package(
    connection: &Connection,
    username: &str,
    device_id: &DeviceId,
) -> Result<Option<TakenKeyPackage>, StoreError> {
    const OPERATION: &str = "take_key_package";
    // Ordinary packages (last_resort = 0) sort first, oldest first.
    let oldest: Option<(i64, Vec<u8>, bool)> = connection
        .prepare_cached(
            "SELECT id, data, last_resort FROM key_packages WHERE username = ?1 AND device_id = ?2
             ORDER BY last_resort, id LIMIT 1",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![username, device_id.as_bytes().as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .during(OPERATION)?;
    let Some((id, key_package, last_resort)) = oldest else {
        return Ok(None);
    };
    if !last_resort {
        connection
            .prepare_cached("DELETE FROM key_packages WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![id]))
            .during(OPERATION)?;
    }
    Ok(Some(TakenKeyPackage { key_package, last_resort }))
}

pub(super) fn last_resort_key_package(
    connection: &Connection,
    username: &str,
    device_id: &DeviceId,
) -> Result<Option<Vec<u8>>, StoreError> {
    connection
        .prepare_cached("SELECT data FROM key_packages WHERE username = ?1 AND device_id = ?2 AND last_resort = 1")
        .and_then(|mut statement| {
            statement.query_row(params![username, device_id.as_bytes().as_slice()], |row| row.get(0)).optional()
        })
        .during("last_resort_key_package")
}

pub(super) fn key_package_stock(
    connection: &Connection,
    username: &str,
    device_id: &DeviceId,
    operation: &'static str,
) -> Result<KeyPackageStock, StoreError> {
    connection
        .prepare_cached(
            "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(MAX(last_resort), 0)
             FROM key_packages WHERE username = ?1 AND device_id = ?2",
        )
        .and_then(|mut statement| {
            statement.query_row(params![username, device_id.as_bytes().as_slice()], |row| {
                Ok(KeyPackageStock { count: row.get(0)?, has_last_resort: row.get(1)? })
            })
        })
        .during(operation)
}

pub(super) fn record_served(
    connection: &Connection,
    served: &KeyPackageServed,
    forget_before_ms: u64,
) -> Result<(), StoreError> {
    const OPERATION: &str = "record_served";
    connection
        .prepare_cached("DELETE FROM key_packages_served WHERE requester = ?1 AND served_at_ms < ?2")
        .and_then(|mut statement| statement.execute(params![served.requester, forget_before_ms as i64]))
        .during(OPERATION)?;
    connection
        .prepare_cached(
            "INSERT INTO key_packages_served (requester, init_key, target, last_resort, served_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (requester, init_key) DO UPDATE SET served_at_ms = ?5",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                served.requester,
                served.init_key,
                served.target,
                served.last_resort,
                served.served_at_ms as i64
            ])
        })
        .during(OPERATION)?;
    Ok(())
}

pub(super) fn was_served(connection: &Connection, requester: &str, init_key: &[u8]) -> Result<bool, StoreError> {
    connection
        .prepare_cached("SELECT 1 FROM key_packages_served WHERE requester = ?1 AND init_key = ?2")
        .and_then(|mut statement| statement.exists(params![requester, init_key]))
        .during("was_served")
}

/// Consumes the served records of `init_keys` for `requester` (a commit's
/// adds); `Some(key)` names one that is missing, and then nothing changed.
pub(super) fn consume_served(
    connection: &Connection,
    requester: &str,
    init_keys: &[Vec<u8>],
    operation: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    for key in init_keys {
        if !was_served(connection, requester, key)? {
            return Ok(Some(key.clone()));
        }
    }
    let mut delete = connection
        .prepare_cached("DELETE FROM key_packages_served WHERE requester = ?1 AND init_key = ?2")
        .during(operation)?;
    for key in init_keys {
        delete.execute(params![requester, key]).during(operation)?;
    }
    Ok(None)
}
