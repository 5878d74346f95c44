//! Model-based property test of the core: proptest strategies over the model in
//! [`crate::fuzz::model`] (which the `module` fuzz target drives from bytes); the model says what is
//! checked.

use crate::fuzz::model::{run, Action, Cmd, NetAction};
use proptest::prelude::*;

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        (0u8..4).prop_map(Cmd::Select),
        prop_oneof![Just(0u8), Just(1)].prop_map(Cmd::Protocol),
        prop_oneof![Just(7000u16), Just(7001), Just(9)].prop_map(Cmd::Remote),
        Just(Cmd::Start),
        Just(Cmd::Stop),
        prop_oneof![Just(0u32), Just(1), Just(300), Just(30000)].prop_map(Cmd::ReadWait),
        Just(Cmd::Read),
        Just(Cmd::Read),
        prop_oneof![Just(0u32), Just(1), Just(200)].prop_map(Cmd::SendWait),
        (1usize..=1460, any::<u8>()).prop_map(|(l, s)| Cmd::Send(l, s)),
        (1usize..=40, any::<u8>()).prop_map(|(l, s)| Cmd::Send(l, s)),
        (1u8..=60).prop_map(Cmd::Burst),
        prop_oneof![Just(0u8), Just(1), Just(10), Just(11)].prop_map(Cmd::Server),
        (0u8..4).prop_map(Cmd::Loop),
        Just(Cmd::Info),
        Just(Cmd::Status),
        Just(Cmd::Lookup),
        Just(Cmd::Ping),
        Just(Cmd::Message),
        Just(Cmd::Empty),
        (1u8..60).prop_map(Cmd::Junk),
    ]
}

fn net() -> impl Strategy<Value = NetAction> {
    prop_oneof![
        any::<u8>().prop_map(NetAction::ConnectOk),
        any::<u8>().prop_map(NetAction::ConnectFail),
        (any::<u8>(), 1u8..200).prop_map(|(i, n)| NetAction::Data(i, n)),
        any::<u8>().prop_map(NetAction::PeerClose),
        any::<u8>().prop_map(NetAction::Ack),
        any::<u8>().prop_map(NetAction::Ack),
        any::<u8>().prop_map(NetAction::Accept),
        (any::<u8>(), any::<bool>()).prop_map(|(i, ok)| NetAction::Answer(i, ok)),
        any::<u8>().prop_map(NetAction::FinishDrain),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (cmd(), proptest::collection::vec(0u16..1000, 0..3)).prop_map(|(c, s)| Action::Host(c, s)),
        4 => net().prop_map(Action::Net),
        1 => prop_oneof![Just(1u32), Just(150), Just(1000), Just(31_000)].prop_map(Action::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn one_reply_per_command_and_sent_bytes_are_the_reported_ones(
        actions in proptest::collection::vec(action(), 1..120)
    ) {
        run(&actions);
    }
}
