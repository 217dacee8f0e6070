//! The journal payload of a [`Command`]: one tag byte, then the command's fields in little-endian
//! order, variable-length lists prefixed by a one-byte count. The layout is specified byte for byte
//! in `docs/formats.md` ("Command payload"), because the journal outlives any version of this code.
//!
//! Hand-written rather than derived (rkyv, bincode): the format is small, must never change by
//! accident when a Rust type changes, and encoding a command is a handful of stores with no
//! allocation once the caller's buffer has grown.

use crate::command::{
    BuyerId, CartVersion, Command, Expiry, LineRequest, LineRequests, OrderId, ReleaseReason,
    SkuId, Timestamp, WarehouseChoices, WarehouseId,
};
use crate::wire::{put_u16, put_u32, put_u64, Reader, Truncated};

/// The journal record kind for commands (the journal's `kind` byte).
pub const RECORD_KIND_COMMAND: u8 = 0;

mod tag {
    pub const SET_STOCK: u8 = 1;
    pub const SET_BUYER_LIMIT: u8 = 2;
    pub const RESERVE: u8 = 3;
    pub const COMMIT: u8 = 4;
    pub const RELEASE: u8 = 5;
    pub const EXPIRE: u8 = 6;
    pub const CANCEL: u8 = 7;
    pub const SHIP: u8 = 8;
    pub const DELIVER: u8 = 9;
    /// A `Reserve` with an expiry of either kind and an optional cart claim. Tag 3 stays for the
    /// reserves it can express (an absolute deadline and no cart), so those keep their old bytes
    /// and journals written before tag 10 existed read the same forever. A tag 10 record of such
    /// a reserve decodes too, though this encoder never writes one.
    pub const RESERVE_EXPIRY_CART: u8 = 10;
}

/// The `expiry_kind` byte of tag 10.
mod expiry_kind {
    pub const AT: u8 = 1;
    pub const AFTER: u8 = 2;
}

/// A payload that is not a valid command encoding.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated(Truncated),
    UnknownTag(u8),
    Invalid(&'static str),
    Trailing(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated(truncated) => write!(f, "command {truncated}"),
            Self::UnknownTag(tag) => write!(f, "unknown command tag {tag}"),
            Self::Invalid(field) => write!(f, "invalid field: {field}"),
            Self::Trailing(bytes) => write!(f, "{bytes} trailing bytes after the command"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<Truncated> for DecodeError {
    fn from(truncated: Truncated) -> Self {
        Self::Truncated(truncated)
    }
}

/// Appends the encoding of `command` to `out`.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    match *command {
        Command::SetStock { sku, warehouse, on_hand } => {
            out.push(tag::SET_STOCK);
            put_u32(out, sku.0);
            put_u16(out, warehouse.0);
            put_u32(out, on_hand);
        }
        Command::SetBuyerLimit { sku, per_buyer } => {
            out.push(tag::SET_BUYER_LIMIT);
            put_u32(out, sku.0);
            match per_buyer {
                Some(limit) => {
                    out.push(1);
                    put_u32(out, limit);
                }
                None => {
                    out.push(0);
                    put_u32(out, 0);
                }
            }
        }
        Command::Reserve { buyer, expiry, cart, ref lines, ref warehouses } => {
            if let (Expiry::At(expires_at), None) = (expiry, cart) {
                out.push(tag::RESERVE);
                put_u64(out, buyer.0);
                put_u64(out, expires_at.0);
            } else {
                out.push(tag::RESERVE_EXPIRY_CART);
                put_u64(out, buyer.0);
                let (kind, nanos) = match expiry {
                    Expiry::At(expires_at) => (expiry_kind::AT, expires_at.0),
                    Expiry::After { ttl_ns } => (expiry_kind::AFTER, ttl_ns),
                };
                out.push(kind);
                put_u64(out, nanos);
                match cart {
                    Some(version) => {
                        out.push(1);
                        put_u64(out, version.0);
                    }
                    None => {
                        out.push(0);
                        put_u64(out, 0);
                    }
                }
            }
            put_lines_and_warehouses(out, lines, warehouses);
        }
        Command::Commit { order } => order_command(out, tag::COMMIT, order),
        Command::Release { order, reason } => {
            order_command(out, tag::RELEASE, order);
            out.push(match reason {
                ReleaseReason::PaymentFailed => 1,
                ReleaseReason::Cancelled => 2,
            });
        }
        Command::Expire => out.push(tag::EXPIRE),
        Command::Cancel { order } => order_command(out, tag::CANCEL, order),
        Command::Ship { order } => order_command(out, tag::SHIP, order),
        Command::Deliver { order } => order_command(out, tag::DELIVER, order),
    }
}

fn put_lines_and_warehouses(
    out: &mut Vec<u8>,
    lines: &LineRequests,
    warehouses: &WarehouseChoices,
) {
    out.push(u8::try_from(lines.len()).expect("bounded list length fits u8"));
    for line in lines.as_slice() {
        put_u32(out, line.sku.0);
        put_u32(out, line.quantity);
    }
    out.push(u8::try_from(warehouses.len()).expect("bounded list length fits u8"));
    for warehouse in warehouses.as_slice() {
        put_u16(out, warehouse.0);
    }
}

fn read_lines_and_warehouses(
    input: &mut Reader<'_>,
) -> Result<(LineRequests, WarehouseChoices), DecodeError> {
    let mut lines = LineRequests::default();
    for _ in 0..input.u8()? {
        let line = LineRequest { sku: SkuId(input.u32()?), quantity: input.u32()? };
        if !lines.push(line) {
            return Err(DecodeError::Invalid("too many lines"));
        }
    }
    let mut warehouses = WarehouseChoices::default();
    for _ in 0..input.u8()? {
        if !warehouses.push(WarehouseId(input.u16()?)) {
            return Err(DecodeError::Invalid("too many warehouses"));
        }
    }
    Ok((lines, warehouses))
}

fn order_command(out: &mut Vec<u8>, tag: u8, order: OrderId) {
    out.push(tag);
    put_u64(out, order.0);
}

/// Decodes one command; the payload must hold exactly one.
pub fn decode_command(payload: &[u8]) -> Result<Command, DecodeError> {
    let mut input = Reader::new(payload);
    let command = match input.u8()? {
        tag::SET_STOCK => Command::SetStock {
            sku: SkuId(input.u32()?),
            warehouse: WarehouseId(input.u16()?),
            on_hand: input.u32()?,
        },
        tag::SET_BUYER_LIMIT => {
            let sku = SkuId(input.u32()?);
            let present = input.u8()?;
            let limit = input.u32()?;
            let per_buyer = match present {
                0 if limit == 0 => None,
                1 => Some(limit),
                _ => return Err(DecodeError::Invalid("per_buyer")),
            };
            Command::SetBuyerLimit { sku, per_buyer }
        }
        tag::RESERVE => {
            let buyer = BuyerId(input.u64()?);
            let expiry = Expiry::At(Timestamp(input.u64()?));
            let (lines, warehouses) = read_lines_and_warehouses(&mut input)?;
            Command::Reserve { buyer, expiry, cart: None, lines, warehouses }
        }
        tag::RESERVE_EXPIRY_CART => {
            let buyer = BuyerId(input.u64()?);
            let kind = input.u8()?;
            let nanos = input.u64()?;
            let expiry = match kind {
                expiry_kind::AT => Expiry::At(Timestamp(nanos)),
                expiry_kind::AFTER => Expiry::After { ttl_ns: nanos },
                _ => return Err(DecodeError::Invalid("expiry kind")),
            };
            let present = input.u8()?;
            let version = input.u64()?;
            let cart = match present {
                0 if version == 0 => None,
                1 => Some(CartVersion(version)),
                _ => return Err(DecodeError::Invalid("cart")),
            };
            let (lines, warehouses) = read_lines_and_warehouses(&mut input)?;
            Command::Reserve { buyer, expiry, cart, lines, warehouses }
        }
        tag::COMMIT => Command::Commit { order: OrderId(input.u64()?) },
        tag::RELEASE => {
            let order = OrderId(input.u64()?);
            let reason = match input.u8()? {
                1 => ReleaseReason::PaymentFailed,
                2 => ReleaseReason::Cancelled,
                _ => return Err(DecodeError::Invalid("release reason")),
            };
            Command::Release { order, reason }
        }
        tag::EXPIRE => Command::Expire,
        tag::CANCEL => Command::Cancel { order: OrderId(input.u64()?) },
        tag::SHIP => Command::Ship { order: OrderId(input.u64()?) },
        tag::DELIVER => Command::Deliver { order: OrderId(input.u64()?) },
        unknown => return Err(DecodeError::UnknownTag(unknown)),
    };
    if !input.is_empty() {
        return Err(DecodeError::Trailing(payload.len() - input.position()));
    }
    Ok(command)
}
