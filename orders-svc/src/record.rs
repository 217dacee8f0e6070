//! The checkout record: what the order of a reservation needs besides what the engine decides,
//! journaled as the `Reserve` command's attachment (docs/formats.md, "Checkout record").
//!
//! The engine reserves by dense SKU ids and quantities and never reads this; the projection reads
//! it back with the reservation's outcome and writes the order, its payment and the idempotency
//! answer from the two. So the journal alone holds everything a checkout decided, and every row
//! about it can be rebuilt from the journal.
//!
//! Layout: a version byte (`1`), then fields in order, little-endian, strings as a length (u8 for
//! short ones, u16 for the shipping fields) and UTF-8 bytes. Hand-written for the reasons the
//! command codec is: the journal outlives any version of this code.

/// The record format version this code writes.
const VERSION: u8 = 1;

/// One line of the order as priced at checkout. The quantity and the engine's SKU id are in the
/// command; the line's position matches the command's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordLine {
    pub sku: String,
    pub unit_price_cents: i64,
    pub seller_id: i64,
}

/// Where the order goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shipping {
    pub name: String,
    pub line1: String,
    pub city: String,
    pub postal_code: String,
}

/// Everything the order record of a reservation needs that is not in the `Reserve` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutRecord {
    /// The buyer's `Idempotency-Key`.
    pub idempotency_key: String,
    /// A digest of the request (same body, same digest), to tell a retry from a reused key.
    pub request_hash: [u8; 16],
    pub currency: String,
    pub total_cents: i64,
    pub lines: Vec<RecordLine>,
    pub shipping: Shipping,
    /// The payment provider's token for the charge.
    pub payment_token: String,
}

/// A payload that is not a checkout record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("checkout record truncated at byte {0}")]
    Truncated(usize),
    #[error("checkout record version {0} is not supported")]
    Version(u8),
    #[error("checkout record field {0} is not valid")]
    Invalid(&'static str),
    #[error("{0} trailing bytes after the checkout record")]
    Trailing(usize),
}

impl CheckoutRecord {
    /// Appends the encoding to `out`. Strings longer than their length prefix allows are a bug in
    /// the caller (the gateway validates lengths first), and stop the process.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        put_short(out, &self.idempotency_key);
        out.extend_from_slice(&self.request_hash);
        put_short(out, &self.currency);
        out.extend_from_slice(&self.total_cents.to_le_bytes());
        out.push(u8::try_from(self.lines.len()).expect("lines fit u8"));
        for line in &self.lines {
            put_short(out, &line.sku);
            out.extend_from_slice(&line.unit_price_cents.to_le_bytes());
            out.extend_from_slice(&line.seller_id.to_le_bytes());
        }
        for field in [
            &self.shipping.name,
            &self.shipping.line1,
            &self.shipping.city,
            &self.shipping.postal_code,
        ] {
            put_long(out, field);
        }
        put_short(out, &self.payment_token);
    }

    /// The encoding as a new buffer (the attachment handed to the pipeline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 48 * self.lines.len());
        self.encode(&mut out);
        out
    }

    /// Only the idempotency key and the request digest, which lead the record: what the gateway's
    /// key index needs from every reservation it reads back.
    pub fn decode_key(bytes: &[u8]) -> Result<(String, [u8; 16]), RecordError> {
        let mut input = Input { bytes, at: 0 };
        let version = input.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        Ok((input.short("idempotency_key")?, input.array::<16>()?))
    }

    /// Decodes a whole record.
    pub fn decode(bytes: &[u8]) -> Result<CheckoutRecord, RecordError> {
        let mut input = Input { bytes, at: 0 };
        let version = input.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let idempotency_key = input.short("idempotency_key")?;
        let request_hash = input.array::<16>()?;
        let currency = input.short("currency")?;
        let total_cents = i64::from_le_bytes(input.array()?);
        let line_count = input.u8()?;
        let mut lines = Vec::with_capacity(usize::from(line_count));
        for _ in 0..line_count {
            lines.push(RecordLine {
                sku: input.short("sku")?,
                unit_price_cents: i64::from_le_bytes(input.array()?),
                seller_id: i64::from_le_bytes(input.array()?),
            });
        }
        let shipping = Shipping {
            name: input.long("shipping.name")?,
            line1: input.long("shipping.line1")?,
            city: input.long("shipping.city")?,
            postal_code: input.long("shipping.postal_code")?,
        };
        let payment_token = input.short("payment_token")?;
        if input.at != bytes.len() {
            return Err(RecordError::Trailing(bytes.len() - input.at));
        }
        Ok(CheckoutRecord {
            idempotency_key,
            request_hash,
            currency,
            total_cents,
            lines,
            shipping,
            payment_token,
        })
    }
}

fn put_short(out: &mut Vec<u8>, text: &str) {
    out.push(u8::try_from(text.len()).expect("short field fits 255 bytes"));
    out.extend_from_slice(text.as_bytes());
}

fn put_long(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u16::try_from(text.len()).expect("field fits 64 KiB").to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], RecordError> {
        let end = self.at.checked_add(len).ok_or(RecordError::Truncated(self.at))?;
        let slice = self.bytes.get(self.at..end).ok_or(RecordError::Truncated(self.at))?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn text(&mut self, len: usize, field: &'static str) -> Result<String, RecordError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Invalid(field))
    }

    fn short(&mut self, field: &'static str) -> Result<String, RecordError> {
        let len = usize::from(self.u8()?);
        self.text(len, field)
    }

    fn long(&mut self, field: &'static str) -> Result<String, RecordError> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        self.text(len, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CheckoutRecord {
        CheckoutRecord {
            idempotency_key: "key-1".to_owned(),
            request_hash: [7; 16],
            currency: "EUR".to_owned(),
            total_cents: 2 * 1999 + 500,
            lines: vec![
                RecordLine { sku: "A-1".to_owned(), unit_price_cents: 1999, seller_id: 3 },
                RecordLine { sku: "B.2".to_owned(), unit_price_cents: 500, seller_id: 4 },
            ],
            shipping: Shipping {
                name: "Ann".to_owned(),
                line1: "Main St 1".to_owned(),
                city: "Zürich".to_owned(),
                postal_code: "8001".to_owned(),
            },
            payment_token: "tok_ok".to_owned(),
        }
    }

    #[test]
    fn round_trips() {
        let record = record();
        assert_eq!(CheckoutRecord::decode(&record.to_bytes()), Ok(record.clone()));
        assert_eq!(
            CheckoutRecord::decode_key(&record.to_bytes()),
            Ok((record.idempotency_key, record.request_hash))
        );
    }

    #[test]
    fn every_cut_and_any_extra_byte_is_refused() {
        let bytes = record().to_bytes();
        for len in 0..bytes.len() {
            assert!(CheckoutRecord::decode(&bytes[..len]).is_err(), "cut at {len} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(CheckoutRecord::decode(&longer), Err(RecordError::Trailing(1)));
        let mut other_version = bytes;
        other_version[0] = 9;
        assert_eq!(CheckoutRecord::decode(&other_version), Err(RecordError::Version(9)));
    }
}
