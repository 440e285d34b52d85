//! Safety numbers: a short fingerprint of two users' identity keys to compare out of band.
//!
//! Signal-style: each (username, key) pair is hashed with iterated SHA-512 into
//! 30 decimal digits; the two halves are sorted so both sides get the same 60
//! digits, shown as 12 groups of 5. This module only computes; it stores nothing.

use sha2::{Digest, Sha512};

/// Fingerprint format version, hashed first.
const FINGERPRINT_VERSION: [u8; 2] = [0, 0];
/// SHA-512 iterations per half (as in Signal's numeric fingerprints).
const ITERATIONS: usize = 5200;
/// Digit groups per half.
const GROUPS_PER_HALF: usize = 6;

/// Symmetric safety number of two (username, identity key) pairs: 60 decimal digits in
/// 12 groups of 5, the same whichever side computes it (sort the pairs), derived with
/// iterated SHA-512 (Signal-style fingerprint).
pub fn safety_number(a_name: &str, a_key: &[u8], b_name: &str, b_key: &[u8]) -> String {
    let mut halves = [half_fingerprint(a_name, a_key), half_fingerprint(b_name, b_key)];
    halves.sort();
    halves.iter().flatten().map(String::as_str).collect::<Vec<_>>().join(" ")
}

/// Six 5-digit groups for one party.
fn half_fingerprint(name: &str, key: &[u8]) -> Vec<String> {
    let mut hasher = Sha512::new();
    hasher.update(FINGERPRINT_VERSION);
    hasher.update((key.len() as u64).to_be_bytes());
    hasher.update(key);
    hasher.update((name.len() as u64).to_be_bytes());
    hasher.update(name.as_bytes());
    let mut digest = hasher.finalize();
    for _ in 0..ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(digest);
        hasher.update(key);
        digest = hasher.finalize();
    }
    digest
        .chunks_exact(5)
        .take(GROUPS_PER_HALF)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_sixty_digits() {
        let ab = safety_number("alice", &[1; 32], "bob", &[2; 32]);
        let ba = safety_number("bob", &[2; 32], "alice", &[1; 32]);
        assert_eq!(ab, ba);
        let groups: Vec<&str> = ab.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        assert_eq!(ab.chars().filter(char::is_ascii_digit).count(), 60);
    }

    #[test]
    fn changes_with_key_or_name() {
        let base = safety_number("alice", &[1; 32], "bob", &[2; 32]);
        let mut other_key = [2u8; 32];
        other_key[31] = 3;
        assert_ne!(base, safety_number("alice", &[1; 32], "bob", &other_key));
        assert_ne!(base, safety_number("alice", &[1; 32], "bobby", &[2; 32]));
        assert_eq!(base, safety_number("alice", &[1; 32], "bob", &[2; 32]));
    }
}
