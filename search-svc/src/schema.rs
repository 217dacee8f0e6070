//! The index layout: which tantivy field holds what, and how text is cut into words.
//!
//! Matching runs on `all` (title, description, brand and attribute values in one field) so that
//! a query word costs one term lookup, or one Levenshtein automaton, per segment instead of one
//! per source field; `title` is indexed again on its own only to score title matches higher.
//! Everything a hit, a facet or a sort needs is a fast field: reading a page from the doc store
//! decompressed a 16 KiB block per hit and was a tenth of a query's time. The doc store keeps the
//! same values for inspection and future use.

use tantivy::schema::{
    FacetOptions, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// Name under which [`analyzer`] is registered with every index.
pub(crate) const TOKENIZER_NAME: &str = "surge";

/// Words longer than this are not indexed (base64 blobs, URLs pasted into a description).
const WORD_BYTES_MAX: usize = 40;

/// Splits on anything that is not alphanumeric, lowercases, folds accents to ASCII.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(WORD_BYTES_MAX))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Fast-field column names, read by name in the collector.
pub(crate) mod column {
    pub(crate) const PRODUCT_ID: &str = "product_id";
    pub(crate) const TITLE: &str = "title";
    pub(crate) const CURRENCY: &str = "currency";
    pub(crate) const STOCK_WAREHOUSE: &str = "stock_warehouse";
    pub(crate) const BRAND: &str = "brand";
    pub(crate) const CATEGORY: &str = "category";
    pub(crate) const PRICE_CENTS: &str = "price_cents";
    pub(crate) const RATING: &str = "rating";
    pub(crate) const CREATED_AT_UNIX: &str = "created_at_unix";
    pub(crate) const IN_STOCK: &str = "in_stock";
}

/// Handles to every field of the schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// `u64`, indexed (upsert and delete by term), fast (tie-break), stored.
    pub(crate) product_id: Field,
    /// Tokenized title, stored; scored separately so that title matches rank first.
    pub(crate) title: Field,
    /// Tokenized title, description, brand and attribute values: every query word must match here.
    pub(crate) all: Field,
    /// Brand as displayed: stored, fast (facet counts).
    pub(crate) brand: Field,
    /// Lowercased brand, untokenized: the brand filter.
    pub(crate) brand_key: Field,
    /// Category path as given: stored, fast (facet counts).
    pub(crate) category: Field,
    /// Lowercased category path as a facet: tantivy indexes every ancestor, so one term is a subtree.
    pub(crate) category_path: Field,
    /// `name=value`, lowercased, untokenized, one term per attribute: the attribute filter.
    pub(crate) attribute: Field,
    /// `i64`, indexed and fast (range filter and sort), stored.
    pub(crate) price_cents: Field,
    pub(crate) currency: Field,
    /// `f64`, absent when the product has no reviews; fast (sort), stored.
    pub(crate) rating: Field,
    /// `i64`, fast (sort by newest), stored.
    pub(crate) created_at_unix: Field,
    /// `u64` per warehouse with stock, indexed (deliverability filter), stored.
    pub(crate) stock_warehouse: Field,
    /// `u64` 1 when some warehouse has stock, else 0: the in-stock filter and a suggestion signal.
    pub(crate) in_stock: Field,
}

impl Fields {
    /// Builds the schema and returns it with the handles to its fields.
    pub(crate) fn build() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let words = TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqs);
        let fields = Fields {
            product_id: builder.add_u64_field(column::PRODUCT_ID, INDEXED | FAST | STORED),
            title: builder.add_text_field(
                column::TITLE,
                TextOptions::default()
                    .set_indexing_options(words.clone())
                    .set_stored()
                    .set_fast(None),
            ),
            all: builder.add_text_field("all", TextOptions::default().set_indexing_options(words)),
            brand: builder
                .add_text_field(column::BRAND, TextOptions::default().set_stored().set_fast(None)),
            brand_key: builder.add_text_field("brand_key", STRING),
            category: builder.add_text_field(
                column::CATEGORY,
                TextOptions::default().set_stored().set_fast(None),
            ),
            category_path: builder.add_facet_field("category_path", FacetOptions::default()),
            attribute: builder.add_text_field("attribute", STRING),
            price_cents: builder.add_i64_field(column::PRICE_CENTS, INDEXED | FAST | STORED),
            currency: builder.add_text_field(
                column::CURRENCY,
                TextOptions::default().set_stored().set_fast(None),
            ),
            rating: builder.add_f64_field(column::RATING, FAST | STORED),
            created_at_unix: builder.add_i64_field(column::CREATED_AT_UNIX, FAST | STORED),
            stock_warehouse: builder
                .add_u64_field(column::STOCK_WAREHOUSE, INDEXED | FAST | STORED),
            in_stock: builder.add_u64_field(column::IN_STOCK, INDEXED | FAST),
        };
        (builder.build(), fields)
    }
}

/// The attribute filter term for `name` = `value`: both lowercased, so matching ignores case.
pub(crate) fn attribute_key(name: &str, value: &str) -> String {
    let mut key = String::with_capacity(name.len() + value.len() + 1);
    key.push_str(&name.trim().to_lowercase());
    key.push('=');
    key.push_str(&value.trim().to_lowercase());
    key
}

/// The segments of a category path, lowercased, empty segments dropped (`"a//b/"` is `a/b`).
pub(crate) fn category_segments(path: &str) -> Vec<String> {
    path.split('/')
        .map(str::trim)
        .filter(|segment| !segment.is_empty())
        .map(str::to_lowercase)
        .collect()
}
