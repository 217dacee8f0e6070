//! Every decoder of persisted bytes, fed damaged and arbitrary input: it answers an error, never
//! panics, and what it accepts it can encode again; an accepted snapshot keeps every invariant of
//! the engine.
//!
//! The journal frames every record with a CRC32C, so damaged bytes rarely reach the payload
//! decoders; these tests do not count on that. Inputs are valid encodings with a byte flipped,
//! overwritten, inserted or removed, or cut short, plus plain random bytes. (Not a coverage-guided
//! fuzzer: cargo-fuzz needs a nightly toolchain; these run in CI on stable.)

use proptest::prelude::*;
use surge_engine::codec::{decode_command, encode_command};
use surge_engine::{
    BuyerId, CartVersion, Command, DiscardEvents, Engine, Expiry, Limits, LineRequest,
    LineRequests, OrderId, ReleaseReason, Sequence, SkuId, Timestamp, WarehouseChoices,
    WarehouseId,
};
use surge_journal::record::{decode_record, decode_segment_header, encode_record};

const LIMITS: Limits = Limits {
    skus_max: 8,
    warehouses_max: 4,
    stock_cells_max: 16,
    orders_max: 16,
    buyer_counters_max: 8,
};

fn reserve(
    buyer: u64,
    expiry: Expiry,
    cart: Option<u64>,
    lines: &[(u32, u32)],
    warehouses: &[u16],
) -> Command {
    let lines: Vec<LineRequest> =
        lines.iter().map(|&(sku, quantity)| LineRequest { sku: SkuId(sku), quantity }).collect();
    let warehouses: Vec<WarehouseId> = warehouses.iter().map(|&w| WarehouseId(w)).collect();
    Command::Reserve {
        buyer: BuyerId(buyer),
        expiry,
        cart: cart.map(CartVersion),
        lines: LineRequests::from_slice(&lines).unwrap(),
        warehouses: WarehouseChoices::from_slice(&warehouses).unwrap(),
    }
}

/// One command of every kind, with several lines where a kind has lines.
fn commands() -> Vec<Command> {
    vec![
        Command::SetStock { sku: SkuId(3), warehouse: WarehouseId(1), on_hand: 70_000 },
        Command::SetBuyerLimit { sku: SkuId(2), per_buyer: Some(4) },
        Command::SetBuyerLimit { sku: SkuId(2), per_buyer: None },
        reserve(7, Expiry::At(Timestamp(1_000_000)), None, &[(1, 2), (3, 1), (5, 9)], &[2, 0, 1]),
        reserve(8, Expiry::After { ttl_ns: 900_000_000_000 }, None, &[(4, 1), (2, 3)], &[3, 1]),
        reserve(9, Expiry::After { ttl_ns: 1 }, Some(12), &[(4, 1)], &[0]),
        reserve(9, Expiry::At(Timestamp(5)), Some(0), &[(6, 2), (1, 1)], &[1, 2, 3]),
        Command::Commit { order: OrderId(41) },
        Command::Release { order: OrderId(42), reason: ReleaseReason::PaymentFailed },
        Command::Release { order: OrderId(43), reason: ReleaseReason::Cancelled },
        Command::Expire,
        Command::Cancel { order: OrderId(44) },
        Command::Ship { order: OrderId(45) },
        Command::Deliver { order: OrderId(u64::MAX) },
    ]
}

/// A snapshot with stock in several warehouses, a buyer limit, pending, confirmed and shipped
/// orders, and cart claims of a pending and of a shipped order.
fn snapshot() -> Vec<u8> {
    let mut engine = Engine::new(LIMITS);
    let mut sequence = 0;
    let mut apply = |engine: &mut Engine, command: Command| {
        sequence += 1;
        engine.apply(Sequence(sequence), Timestamp(sequence), &command, &mut DiscardEvents)
    };
    for (sku, warehouse, on_hand) in [(1, 0, 5), (1, 2, 3), (3, 1, 9), (5, 0, 4)] {
        let command =
            Command::SetStock { sku: SkuId(sku), warehouse: WarehouseId(warehouse), on_hand };
        apply(&mut engine, command);
    }
    apply(&mut engine, Command::SetBuyerLimit { sku: SkuId(1), per_buyer: Some(3) });
    let hour = Expiry::After { ttl_ns: 3_600_000_000_000 };
    apply(&mut engine, reserve(1, hour, Some(4), &[(1, 2), (3, 1)], &[0, 1]));
    apply(&mut engine, reserve(2, Expiry::At(Timestamp(1_000_000)), None, &[(5, 1)], &[0]));
    apply(&mut engine, reserve(3, hour, Some(1), &[(1, 1), (3, 2)], &[2, 1]));
    // Order ids are the sequences of their reservations: 6, 7 and 8.
    apply(&mut engine, Command::Commit { order: OrderId(7) });
    apply(&mut engine, Command::Commit { order: OrderId(8) });
    apply(&mut engine, Command::Ship { order: OrderId(8) });
    engine.check_invariants();
    assert_eq!(engine.live_orders(), 3, "the fixture holds the orders it means to");
    assert_eq!(engine.cart_claim(BuyerId(1)), Some((CartVersion(4), OrderId(6))));
    assert_eq!(engine.cart_claim(BuyerId(3)), Some((CartVersion(1), OrderId(8))));
    let mut bytes = Vec::new();
    engine.encode_snapshot(&mut bytes);
    bytes
}

fn framed_record() -> Vec<u8> {
    let mut payload = Vec::new();
    let command = reserve(7, Expiry::After { ttl_ns: 1 }, Some(3), &[(1, 2), (3, 1)], &[2, 0]);
    encode_command(&command, &mut payload);
    let mut bytes = Vec::new();
    encode_record(&mut bytes, 12, 34, 1, &payload);
    bytes
}

/// A way to damage a valid encoding.
#[derive(Clone, Debug)]
enum Damage {
    Flip {
        at: usize,
        bit: u8,
    },
    Overwrite {
        at: usize,
        value: u8,
    },
    Insert {
        at: usize,
        value: u8,
    },
    Remove {
        at: usize,
    },
    Truncate {
        at: usize,
    },
    /// Four bytes at `at` (a length or a count, often) become `value`.
    Word {
        at: usize,
        value: u32,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Damage::Overwrite { at, value }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Damage::Insert { at, value }),
        any::<usize>().prop_map(|at| Damage::Remove { at }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (any::<usize>(), any::<u32>()).prop_map(|(at, value)| Damage::Word { at, value }),
    ]
}

fn apply_damage(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    let len = out.len();
    match *damage {
        Damage::Flip { at, bit } => out[at % len] ^= 1 << bit,
        Damage::Overwrite { at, value } => out[at % len] = value,
        Damage::Insert { at, value } => out.insert(at % (len + 1), value),
        Damage::Remove { at } => {
            out.remove(at % len);
        }
        Damage::Truncate { at } => out.truncate(at % len),
        Damage::Word { at, value } => {
            let at = at % len.saturating_sub(3).max(1);
            for (offset, byte) in value.to_le_bytes().into_iter().enumerate() {
                if let Some(slot) = out.get_mut(at + offset) {
                    *slot = byte;
                }
            }
        }
    }
    out
}

/// Decodes a command; what is accepted must encode and decode to itself.
fn check_command(bytes: &[u8]) {
    if let Ok(command) = decode_command(bytes) {
        let mut again = Vec::new();
        encode_command(&command, &mut again);
        assert_eq!(decode_command(&again), Ok(command), "an accepted command re-encodes");
    }
}

/// Decodes a snapshot; what is accepted must keep the engine's invariants and encode and decode
/// to the same state.
fn check_snapshot(bytes: &[u8]) {
    if let Ok(engine) = Engine::decode_snapshot(LIMITS, bytes) {
        engine.check_invariants();
        let mut again = Vec::new();
        engine.encode_snapshot(&mut again);
        let decoded = Engine::decode_snapshot(LIMITS, &again).expect("its own encoding decodes");
        assert_eq!(decoded.digest(), engine.digest(), "an accepted snapshot re-encodes");
    }
}

#[test]
fn the_fixtures_decode_whole() {
    for command in commands() {
        let mut bytes = Vec::new();
        encode_command(&command, &mut bytes);
        assert_eq!(decode_command(&bytes), Ok(command));
    }
    assert!(Engine::decode_snapshot(LIMITS, &snapshot()).is_ok());
    let record = framed_record();
    let decoded = decode_record(&record).expect("the framed record decodes");
    assert_eq!((decoded.seq, decoded.at, decoded.kind), (12, 34, 1));
    assert!(decode_command(decoded.payload).is_ok());
}

/// The reserve layouts byte for byte as docs/formats.md gives them, written by hand rather than by
/// the encoder, so that a change to the encoder cannot pass by changing both sides.
#[test]
fn reserve_records_decode_as_the_format_specifies() {
    fn le(bytes: &mut Vec<u8>, value: u64, width: usize) {
        bytes.extend_from_slice(&value.to_le_bytes()[..width]);
    }
    // One line (sku 4, quantity 2), warehouses 3 then 1.
    let mut tail = vec![1];
    le(&mut tail, 4, 4);
    le(&mut tail, 2, 4);
    tail.push(2);
    le(&mut tail, 3, 2);
    le(&mut tail, 1, 2);

    let mut tag_3 = vec![3];
    le(&mut tag_3, 9, 8);
    le(&mut tag_3, 1_000_000, 8);
    tag_3.extend_from_slice(&tail);
    let at = reserve(9, Expiry::At(Timestamp(1_000_000)), None, &[(4, 2)], &[3, 1]);
    assert_eq!(decode_command(&tag_3), Ok(at));
    let mut encoded = Vec::new();
    encode_command(&at, &mut encoded);
    assert_eq!(encoded, tag_3, "an absolute deadline without a cart is still written as tag 3");

    let tag_10 = |kind: u8, nanos: u64, present: u8, version: u64| {
        let mut bytes = vec![10];
        le(&mut bytes, 9, 8);
        bytes.push(kind);
        le(&mut bytes, nanos, 8);
        bytes.push(present);
        le(&mut bytes, version, 8);
        bytes.extend_from_slice(&tail);
        bytes
    };
    let after = reserve(9, Expiry::After { ttl_ns: 600 }, Some(7), &[(4, 2)], &[3, 1]);
    assert_eq!(decode_command(&tag_10(2, 600, 1, 7)), Ok(after));
    encoded.clear();
    encode_command(&after, &mut encoded);
    assert_eq!(encoded, tag_10(2, 600, 1, 7));
    let after_no_cart = reserve(9, Expiry::After { ttl_ns: 600 }, None, &[(4, 2)], &[3, 1]);
    assert_eq!(decode_command(&tag_10(2, 600, 0, 0)), Ok(after_no_cart));
    let at_with_cart = reserve(9, Expiry::At(Timestamp(600)), Some(0), &[(4, 2)], &[3, 1]);
    assert_eq!(decode_command(&tag_10(1, 600, 1, 0)), Ok(at_with_cart));
    // Tag 10 may also hold what tag 3 holds; it decodes to the same command.
    let at_no_cart = reserve(9, Expiry::At(Timestamp(600)), None, &[(4, 2)], &[3, 1]);
    assert_eq!(decode_command(&tag_10(1, 600, 0, 0)), Ok(at_no_cart));

    for (kind, present, version) in [(0, 0, 0), (3, 0, 0), (255, 1, 1), (2, 2, 0), (2, 0, 5)] {
        assert!(
            decode_command(&tag_10(kind, 600, present, version)).is_err(),
            "expiry_kind {kind}, cart_present {present}, cart_version {version}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn damaged_commands_are_refused_or_exact(which in any::<prop::sample::Index>(), damage in damage()) {
        let commands = commands();
        let mut bytes = Vec::new();
        encode_command(which.get(&commands), &mut bytes);
        check_command(&apply_damage(&bytes, &damage));
    }

    #[test]
    fn damaged_snapshots_are_refused_or_exact(damage in damage()) {
        check_snapshot(&apply_damage(&snapshot(), &damage));
    }

    #[test]
    fn damaged_records_are_refused_or_read(damage in damage()) {
        let bytes = apply_damage(&framed_record(), &damage);
        if let Ok(record) = decode_record(&bytes) {
            check_command(record.payload);
        }
        let _ = decode_segment_header(&bytes);
    }

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_command(&bytes);
        check_snapshot(&bytes);
        if let Ok(record) = decode_record(&bytes) {
            check_command(record.payload);
        }
        let _ = decode_segment_header(&bytes);
    }
}
