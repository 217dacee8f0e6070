//! One pass over the matching documents: the total, brand and category counts, and the best
//! `offset + limit` documents in the requested order.
//!
//! tantivy's `TopDocs` and `FacetCollector` would each walk the matches again; counting string
//! fast-field ordinals per segment and turning only the non-zero ones into strings at the end is
//! the cheap way to count facets over every match, not just the page.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::schema::column;
use crate::Sort;

/// Where a document ranks: smaller first. `primary` encodes the sort, `product_id` breaks ties so
/// that pages never overlap or skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RankKey {
    primary: u64,
    product_id: u64,
}

/// A document that made the top `offset + limit` of its segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) key: RankKey,
    pub(crate) address: DocAddress,
    pub(crate) score: Score,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// What a search needs besides the stored fields of its page.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) total: u64,
    /// Best first, at most `top_k`.
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) brand_counts: Vec<(String, u64)>,
    pub(crate) category_counts: Vec<(String, u64)>,
}

/// The fast-field columns of one segment that searches read, and the brand, category and currency
/// strings of its dictionaries by term ordinal.
///
/// Opening a column is not free: a blockwise-linear column deserializes the header of every block
/// (profiling showed opening the sort, facet and hit columns at a tenth of a query at 1M products),
/// and turning an ordinal into its string is a dictionary block search. Segments never change, so
/// each is opened once and kept until it leaves the searcher.
pub(crate) struct SegmentColumns {
    pub(crate) product_id: Column<u64>,
    pub(crate) price_cents: Column<i64>,
    pub(crate) rating: Column<f64>,
    pub(crate) created_at_unix: Column<i64>,
    pub(crate) stock_warehouse: Column<u64>,
    pub(crate) title: Option<StrColumn>,
    pub(crate) brand: Option<StrColumn>,
    pub(crate) category: Option<StrColumn>,
    pub(crate) currency: Option<StrColumn>,
    pub(crate) brand_names: Vec<String>,
    pub(crate) category_names: Vec<String>,
    pub(crate) currency_names: Vec<String>,
}

impl SegmentColumns {
    fn open(reader: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let fast = reader.fast_fields();
        let brand = fast.str(column::BRAND)?;
        let category = fast.str(column::CATEGORY)?;
        let currency = fast.str(column::CURRENCY)?;
        Ok(SegmentColumns {
            product_id: fast.u64(column::PRODUCT_ID)?,
            price_cents: fast.i64(column::PRICE_CENTS)?,
            rating: fast.f64(column::RATING)?,
            created_at_unix: fast.i64(column::CREATED_AT_UNIX)?,
            stock_warehouse: fast.u64(column::STOCK_WAREHOUSE)?,
            title: fast.str(column::TITLE)?,
            brand_names: dictionary_strings(brand.as_ref())?,
            category_names: dictionary_strings(category.as_ref())?,
            currency_names: dictionary_strings(currency.as_ref())?,
            brand,
            category,
            currency,
        })
    }
}

/// [`SegmentColumns`] of every searchable segment, opened on first use.
#[derive(Default)]
pub(crate) struct ColumnCache {
    by_segment: RwLock<HashMap<SegmentId, Arc<SegmentColumns>>>,
}

impl std::fmt::Debug for ColumnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let segments = self.by_segment.read().expect("column cache lock").len();
        f.debug_struct("ColumnCache").field("segments", &segments).finish()
    }
}

impl ColumnCache {
    pub(crate) fn get(&self, reader: &SegmentReader) -> tantivy::Result<Arc<SegmentColumns>> {
        let id = reader.segment_id();
        if let Some(columns) = self.by_segment.read().expect("column cache lock").get(&id) {
            return Ok(Arc::clone(columns));
        }
        let columns = Arc::new(SegmentColumns::open(reader)?);
        self.by_segment.write().expect("column cache lock").insert(id, Arc::clone(&columns));
        Ok(columns)
    }

    /// Forgets segments that are no longer searchable (merged away or deleted).
    pub(crate) fn retain(&self, live: &HashSet<SegmentId>) {
        self.by_segment.write().expect("column cache lock").retain(|id, _| live.contains(id));
    }
}

fn dictionary_strings(column: Option<&StrColumn>) -> io::Result<Vec<String>> {
    let Some(column) = column else {
        return Ok(Vec::new());
    };
    let mut strings = Vec::with_capacity(column.num_terms());
    let mut stream = column.dictionary().stream()?;
    while stream.advance() {
        strings.push(String::from_utf8_lossy(stream.key()).into_owned());
    }
    Ok(strings)
}

/// Collects the total, the facet counts and the top `top_k` documents ordered by `sort`.
#[derive(Debug)]
pub(crate) struct PageCollector<'a> {
    pub(crate) sort: Sort,
    pub(crate) top_k: usize,
    /// Only documents with a price in this range count: the price filter of a search with
    /// other clauses, which is cheaper to check here than to intersect with.
    pub(crate) price_cents: Option<RangeInclusive<i64>>,
    pub(crate) columns: &'a ColumnCache,
}

impl Collector for PageCollector<'_> {
    type Fruit = Collected;
    type Child = PageSegmentCollector;

    fn for_segment(
        &self,
        segment_ordinal: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<PageSegmentCollector> {
        let columns = self.columns.get(reader)?;
        let brand_counts = vec![0; columns.brand_names.len()];
        let category_counts = vec![0; columns.category_names.len()];
        Ok(PageSegmentCollector {
            segment_ordinal,
            sort: self.sort,
            top_k: self.top_k,
            price_cents: self.price_cents.clone(),
            columns,
            brand_counts,
            category_counts,
            heap: BinaryHeap::with_capacity(self.top_k.min(1024) + 1),
            total: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.sort == Sort::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<io::Result<Collected>>) -> tantivy::Result<Collected> {
        let mut merged = Collected::default();
        let mut brand_counts = std::collections::HashMap::<String, u64>::new();
        let mut category_counts = std::collections::HashMap::<String, u64>::new();
        for fruit in fruits {
            let fruit = fruit?;
            merged.total += fruit.total;
            merged.candidates.extend(fruit.candidates);
            for (value, count) in fruit.brand_counts {
                *brand_counts.entry(value).or_default() += count;
            }
            for (value, count) in fruit.category_counts {
                *category_counts.entry(value).or_default() += count;
            }
        }
        merged.candidates.sort_unstable();
        merged.candidates.truncate(self.top_k);
        merged.brand_counts = brand_counts.into_iter().collect();
        merged.category_counts = category_counts.into_iter().collect();
        Ok(merged)
    }
}

/// The per-segment half of [`PageCollector`].
pub(crate) struct PageSegmentCollector {
    segment_ordinal: SegmentOrdinal,
    sort: Sort,
    top_k: usize,
    price_cents: Option<RangeInclusive<i64>>,
    columns: Arc<SegmentColumns>,
    /// Matches per term ordinal of the segment's brand column.
    brand_counts: Vec<u64>,
    category_counts: Vec<u64>,
    /// Max-heap: the worst of the kept candidates is on top, ready to be replaced.
    heap: BinaryHeap<Candidate>,
    total: u64,
}

impl PageSegmentCollector {
    /// The sort part of a document's rank; the product id is read only when it matters.
    fn primary(&self, doc: DocId, score: Score) -> u64 {
        match self.sort {
            Sort::Relevance => u64::from(!ordered_f32(score)),
            Sort::PriceAsc => ordered_i64(self.columns.price_cents.first(doc).unwrap_or(i64::MAX)),
            Sort::PriceDesc => {
                !ordered_i64(self.columns.price_cents.first(doc).unwrap_or(i64::MIN))
            }
            // Unrated products last: `!ordered_f64` of any rating is below `u64::MAX`.
            Sort::Rating => self.columns.rating.first(doc).map_or(u64::MAX, |r| !ordered_f64(r)),
            Sort::Newest => {
                !ordered_i64(self.columns.created_at_unix.first(doc).unwrap_or(i64::MIN))
            }
        }
    }
}

impl SegmentCollector for PageSegmentCollector {
    type Fruit = io::Result<Collected>;

    fn collect(&mut self, doc: DocId, score: Score) {
        if let Some(range) = &self.price_cents {
            // Like tantivy's range query: a product without a price is out of every range.
            match self.columns.price_cents.first(doc) {
                Some(price) if range.contains(&price) => {}
                _ => return,
            }
        }
        self.total += 1;
        if let Some(brand) = &self.columns.brand {
            for ordinal in brand.term_ords(doc) {
                self.brand_counts[ordinal_index(ordinal)] += 1;
            }
        }
        if let Some(category) = &self.columns.category {
            for ordinal in category.term_ords(doc) {
                self.category_counts[ordinal_index(ordinal)] += 1;
            }
        }
        if self.top_k == 0 {
            return;
        }
        let primary = self.primary(doc, score);
        if self.heap.len() == self.top_k
            && self.heap.peek().is_some_and(|worst| primary > worst.key.primary)
        {
            return;
        }
        let key =
            RankKey { primary, product_id: self.columns.product_id.first(doc).unwrap_or(u64::MAX) };
        if self.heap.len() == self.top_k {
            match self.heap.peek() {
                Some(worst) if key < worst.key => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Candidate {
            key,
            address: DocAddress::new(self.segment_ordinal, doc),
            score,
        });
    }

    fn harvest(self) -> io::Result<Collected> {
        Ok(Collected {
            total: self.total,
            candidates: self.heap.into_vec(),
            brand_counts: named_counts(&self.columns.brand_names, &self.brand_counts),
            category_counts: named_counts(&self.columns.category_names, &self.category_counts),
        })
    }
}

fn ordinal_index(ordinal: u64) -> usize {
    usize::try_from(ordinal).expect("a term ordinal fits in memory")
}

fn named_counts(names: &[String], counts: &[u64]) -> Vec<(String, u64)> {
    counts
        .iter()
        .zip(names)
        .filter(|(&count, _)| count > 0)
        .map(|(&count, name)| (name.clone(), count))
        .collect()
}

/// Maps a float to an integer with the same order (negative below positive).
fn ordered_f32(value: f32) -> u32 {
    let bits = value.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | (1 << 31)
    }
}

fn ordered_f64(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn ordered_i64(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::{ordered_f32, ordered_f64, ordered_i64};

    #[test]
    fn order_preserving_encodings() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        assert!(ints.windows(2).all(|w| ordered_i64(w[0]) < ordered_i64(w[1])));
        let floats = [-3.5_f64, -0.1, 0.0, 0.5, 4.9, 5.0];
        assert!(floats.windows(2).all(|w| ordered_f64(w[0]) < ordered_f64(w[1])));
        let scores = [-1.0_f32, 0.0, 0.25, 3.0, 12.5];
        assert!(scores.windows(2).all(|w| ordered_f32(w[0]) < ordered_f32(w[1])));
    }
}
