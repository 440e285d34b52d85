//! Names across servers: domains, `name@domain` user names, and the hub
//! domain inside a group id.
//!
//! A server's domain is a DNS name (its `server.domain`); a user of it is
//! `name@domain`, and a bare `name` is a user of the server that reads it.
//! A group id is 16 random bytes, followed, for a group whose server
//! federates, by the UTF-8 domain of the server hosting it (its hub), which
//! sequences its commits for its whole life; a 16-byte id is a group of the
//! server that holds it. Because the id is in the MLS GroupContext, every
//! member agrees on the hub. Everything here is a pure function over
//! untrusted bytes: it checks and never panics.

/// Bytes of the random part of a group id.
pub const GROUP_ID_RANDOM_LEN: usize = 16;

/// Longest domain, in bytes (DNS).
pub const MAX_DOMAIN_LEN: usize = 253;

/// Whether `text` is a domain as servers are named: dot-separated labels
/// of 1 to 63 lowercase letters, digits and inner hyphens, 253 bytes at
/// most.
pub fn is_valid_domain(text: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    };
    !text.is_empty() && text.len() <= MAX_DOMAIN_LEN && text.split('.').all(label_ok)
}

/// Splits `name@domain` at its last `@` when both sides are non-empty and
/// the domain is valid; `None` for a bare name or a malformed one.
pub fn split_qualified(text: &str) -> Option<(&str, &str)> {
    let (name, domain) = text.rsplit_once('@')?;
    (!name.is_empty() && !name.contains('@') && is_valid_domain(domain)).then_some((name, domain))
}

/// The domain of the server hosting the group `group_id`, when the id
/// names one; `None` for a 16-byte id (a group of the server holding it)
/// or an id whose tail is not a domain.
pub fn hub_of(group_id: &[u8]) -> Option<&str> {
    let tail = group_id.get(GROUP_ID_RANDOM_LEN..).filter(|tail| !tail.is_empty())?;
    std::str::from_utf8(tail).ok().filter(|domain| is_valid_domain(domain))
}

/// The name part of `name@domain` (all of a bare name).
pub fn local_part(user: &str) -> &str {
    split_qualified(user).map_or(user, |(name, _)| name)
}

/// How the names in one group read for one reader (a client, or the
/// server hosting the group): a name of the reader's home domain reads
/// bare, any other as `name@domain`. A credential may carry a bare name (a
/// leaf made before its server federated, or by a client that does not
/// know its domain): it belongs to the group's hub, or to the reader's
/// home for a group whose id names no hub (a group of the reader's own
/// server). Without a home domain (a server that does not federate) every
/// name reads as its credential carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Naming<'a> {
    home: Option<&'a str>,
    hub: Option<&'a str>,
}

impl<'a> Naming<'a> {
    /// The names of the group `group_id` as read at `home`.
    pub fn of_group(home: Option<&'a str>, group_id: &'a [u8]) -> Naming<'a> {
        Naming { home, hub: hub_of(group_id) }
    }

    /// Names outside any group (a key package) as read at `home`: a bare
    /// name is of the server that serves it, read as a local one.
    pub fn at_home(home: Option<&'a str>) -> Naming<'a> {
        Naming { home, hub: None }
    }

    /// The reader's form of the credential name `raw`.
    pub fn read(&self, raw: &str) -> String {
        if self.home.is_none() {
            return raw.to_owned();
        }
        match split_qualified(raw) {
            Some((name, domain)) if Some(domain) == self.home => name.to_owned(),
            Some(_) => raw.to_owned(),
            None => match self.hub {
                Some(hub) if Some(hub) != self.home => format!("{raw}@{hub}"),
                _ => raw.to_owned(),
            },
        }
    }
}

impl Naming<'_> {
    /// The one name every server's users know `read` (a name as
    /// [`Naming::read`] gives it) by: `name@domain`, a bare name being of
    /// the reader's home; bare as it is without a home domain. Members
    /// order by it, so clients on different servers pick the same member
    /// (to commit a leave, to rebuild a broken group).
    pub fn qualified(&self, read: &str) -> String {
        match (split_qualified(read), self.home) {
            (None, Some(home)) => format!("{read}@{home}"),
            _ => read.to_owned(),
        }
    }
}

/// A group id for a group hosted by `domain`: `random` followed by it.
pub fn group_id_hosted_by(random: [u8; GROUP_ID_RANDOM_LEN], domain: &str) -> Vec<u8> {
    [random.as_slice(), domain.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_follow_dns_label_rules() {
        for good in ["a", "a.example", "chat.example.org", "x-1.b2", &"a".repeat(63)] {
            assert!(is_valid_domain(good), "{good}");
        }
        let long = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62));
        assert_eq!(long.len(), 254);
        for bad in ["", ".", "a..b", "-a.b", "a-.b", "A.example", "a b", "a_b", "ä.example", &"a".repeat(64), &long] {
            assert!(!is_valid_domain(bad), "{bad:?}");
        }
    }

    #[test]
    fn qualified_names_split_at_the_last_at() {
        assert_eq!(split_qualified("alice@a.example"), Some(("alice", "a.example")));
        for bad in ["alice", "@a.example", "alice@", "alice@A.example", "a@b@c.example", "alice@a..b"] {
            assert_eq!(split_qualified(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_read_bare_at_home_and_qualified_elsewhere() {
        let hosted_by_a = group_id_hosted_by([1; 16], "a.example");
        let at_a = Naming::of_group(Some("a.example"), &hosted_by_a);
        let at_b = Naming::of_group(Some("b.example"), &hosted_by_a);
        // Leaves as the credentials carry them: qualified, or bare (of the hub).
        for (raw, read_at_a, read_at_b) in [
            ("alice@a.example", "alice", "alice@a.example"),
            ("alice", "alice", "alice@a.example"),
            ("bob@b.example", "bob@b.example", "bob"),
            ("carol@c.example", "carol@c.example", "carol@c.example"),
        ] {
            assert_eq!((at_a.read(raw), at_b.read(raw)), (read_at_a.to_owned(), read_at_b.to_owned()), "{raw}");
        }
        // A group of the reader's own server (16-byte id): bare is local.
        let local = Naming::of_group(Some("a.example"), &[1; 16]);
        assert_eq!((local.read("alice"), local.read("alice@a.example")), ("alice".into(), "alice".into()));
        // No home domain: names read as carried.
        let unfederated = Naming::of_group(None, &[1; 16]);
        assert_eq!(
            (unfederated.read("alice"), unfederated.read("bob@b.example")),
            ("alice".into(), "bob@b.example".into())
        );
        assert_eq!(Naming::at_home(Some("a.example")).read("alice@a.example"), "alice");
        assert_eq!((local_part("alice@a.example"), local_part("alice")), ("alice", "alice"));
    }

    #[test]
    fn every_server_orders_members_alike_by_their_qualified_names() {
        let group = group_id_hosted_by([1; 16], "a.example");
        let (at_a, at_b) = (Naming::of_group(Some("a.example"), &group), Naming::of_group(Some("b.example"), &group));
        // Bare and qualified sort differently ('2' < '@'): by read form,
        // a and b would disagree on who comes first.
        let raws = ["alice@a.example", "alice2@b.example"];
        let order = |naming: Naming<'_>| {
            let mut read: Vec<String> = raws.iter().map(|raw| naming.read(raw)).collect();
            read.sort_by_cached_key(|name| naming.qualified(name));
            read.iter().map(|name| naming.qualified(name)).collect::<Vec<_>>()
        };
        assert_eq!(order(at_a), order(at_b));
        assert_eq!(order(at_a), ["alice2@b.example", "alice@a.example"]);
        assert_eq!(Naming::of_group(None, &[1; 16]).qualified("alice"), "alice", "no home: as carried");
    }

    #[test]
    fn the_hub_is_read_from_the_group_id() {
        let id = group_id_hosted_by([7; 16], "a.example");
        assert_eq!(hub_of(&id), Some("a.example"));
        assert_eq!(hub_of(&[7; 16]), None, "a local group");
        assert_eq!(hub_of(&[7; 3]), None);
        assert_eq!(hub_of(&[[7u8; 16].as_slice(), b"Not A Domain"].concat()), None);
        assert_eq!(hub_of(&[[7u8; 16].as_slice(), &[0xff, 0xfe]].concat()), None, "not UTF-8");
    }
}
