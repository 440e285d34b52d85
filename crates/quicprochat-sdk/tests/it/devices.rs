//! Issue 18, one account on two devices: a phone linked through the relay
//! joins every group and direct conversation of its account, gets every
//! message to the account once, shows the laptop's messages as its own
//! account's; removing it ends its login and its leaves. Safety numbers do
//! not move.

use crate::harness::{link_device, receive_n, texts, Harness};

/// How many leaves `user` holds in `group`, as `viewer` (whose client must
/// be open: the state is shared under its lock) sees its MLS group.
fn leaves_of(harness: &Harness, viewer: &str, group: &str, user: &str) -> usize {
    let profile = quicprochat_sdk::profile::Profile::load(&harness.profile(viewer)).expect("profile");
    let (mls, store) = profile.open_state().expect("state");
    let group_id = store.find_active(group).expect("find").expect("the group").group_id;
    mls.member_devices(&group_id).expect("roster").iter().filter(|leaf| leaf.member.username == user).count()
}

#[tokio::test]
async fn a_linked_phone_gets_every_message_of_its_account_until_it_is_removed() {
    let harness = Harness::start().await;
    let laptop = harness.register("alice").await;
    let bob = harness.register("bob").await;
    laptop.create_group("team").await.expect("create");
    laptop.add_members("team", &["bob".into()]).await.expect("add bob");
    laptop.send("@bob", "hello from the laptop").await.expect("a direct conversation");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["hello from the laptop"]);
    let number_before = bob.safety_number("alice").await.expect("safety number");

    let (phone, approved) = link_device(&harness, &laptop, "alice-phone", "phone").await;
    assert_eq!((approved.label.as_str(), approved.groups, approved.pending), ("phone", 2, 0));
    phone.sync().await.expect("the phone joins");
    let mut groups: Vec<String> = phone.groups().await.expect("groups").into_iter().map(|g| g.name).collect();
    groups.sort();
    assert_eq!(groups, ["@bob", "team"], "every group and direct conversation of the account");
    bob.sync().await.expect("bob follows");
    assert_eq!(leaves_of(&harness, "bob", "team", "alice"), 2);
    assert_eq!(bob.members("team").await.expect("members"), ["alice", "bob"], "one account, two devices");
    let devices = phone.devices().await.expect("devices");
    assert_eq!(
        devices.iter().map(|d| (d.label.as_str(), d.current, d.certified)).collect::<Vec<_>>(),
        [("first device", false, true), ("phone", true, true)]
    );

    // Every message to alice reaches both devices once; the laptop's reach
    // the phone as alice's, naming the laptop's device.
    bob.send("team", "to the team").await.expect("send");
    bob.send("@alice", "to alice").await.expect("send direct");
    for device in [&laptop, &phone] {
        let got = receive_n(device, 2).await;
        assert_eq!(texts(&got), ["to the team", "to alice"]);
        assert!(got.iter().all(|message| message.from == "bob"));
    }
    let sent = laptop.send("team", "from the laptop").await.expect("send");
    let on_phone = receive_n(&phone, 1).await;
    assert_eq!((on_phone[0].from.as_str(), on_phone[0].text.as_str()), ("alice", "from the laptop"));
    assert_eq!(on_phone[0].device, sent.device, "the sender's device");
    assert_eq!(texts(&receive_n(&bob, 1).await), ["from the laptop"]);
    phone.send("@bob", "from the phone").await.expect("send from the phone");
    let on_laptop = receive_n(&laptop, 1).await;
    assert_eq!((on_laptop[0].from.as_str(), on_laptop[0].group.as_str()), ("alice", "@bob"));
    assert_eq!(texts(&receive_n(&bob, 1).await), ["from the phone"]);
    assert_eq!(bob.safety_number("alice").await.expect("safety number"), number_before, "linking moves nothing");

    // A group made on one device after linking has the other one too.
    laptop.create_group("later").await.expect("create after linking");
    laptop.send("later", "note to self").await.expect("send");
    let mine = receive_n(&phone, 1).await;
    assert_eq!((mine[0].group.as_str(), mine[0].text.as_str()), ("later", "note to self"));

    // Someone adding alice later adds every device of hers, in one commit.
    bob.create_group("bobs").await.expect("create");
    bob.add_members("bobs", &["alice".into()]).await.expect("add alice");
    bob.send("bobs", "welcome, both").await.expect("send");
    for device in [&laptop, &phone] {
        assert_eq!(texts(&receive_n(device, 1).await), ["welcome, both"]);
    }
    assert_eq!(leaves_of(&harness, "bob", "bobs", "alice"), 2);

    // The account leaves a group, not one device: the phone's leaf goes first.
    laptop.leave_group("team").await.expect("leave");
    phone.sync().await.expect("the phone follows");
    let mut groups: Vec<String> = phone.groups().await.expect("groups").into_iter().map(|g| g.name).collect();
    groups.sort();
    assert_eq!(groups, ["@bob", "bobs", "later"], "the phone left team with its account");
    bob.send("team", "alone now").await.expect("bob commits the leave and sends");
    assert_eq!(bob.members("team").await.expect("members"), ["bob"]);

    // Removing the phone: its leaves go by commits, its login ends.
    let phone_id = devices.iter().find(|d| d.current).map(|d| d.id.clone()).expect("the phone's id");
    phone.disconnect().await;
    drop(phone);
    assert_eq!(laptop.remove_device(&phone_id).await.expect("removed"), 3, "from the groups it was in");
    bob.send("@alice", "after the removal").await.expect("send");
    assert_eq!(texts(&receive_n(&laptop, 1).await), ["after the removal"]);
    assert_eq!(leaves_of(&harness, "bob", "@alice", "alice"), 1);
    let refused = harness.open_result("alice-phone").await.err().map(|error| error.to_string()).unwrap_or_default();
    assert!(refused.contains("removed"), "a clear error on the removed device: {refused}");
    assert_eq!(bob.safety_number("alice").await.expect("safety number"), number_before, "removal moves nothing");
}
