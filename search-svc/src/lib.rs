//! Full-text search, facets and suggestions over the catalog: a tantivy index of one document per
//! product, which the gateway keeps up to date from catalog and stock events.
//!
//! This crate knows neither HTTP nor SQLite nor engine types: the gateway turns events into
//! [`ProductDoc`]s, calls [`SearchIndex::upsert`] and [`SearchIndex::delete`] as they arrive and
//! [`SearchIndex::commit`] every few hundred milliseconds with the offset of the last event
//! applied, so that after a restart it resumes from [`SearchIndex::committed_offset`].
//!
//! Matching (API.md, "Search and discovery"): every query word must match the title,
//! description, brand or an attribute value, with typo tolerance by word length (see
//! [`edit_distance_for`]); exact matches score above fuzzy ones and title matches above the rest.

mod cache;
mod collect;
mod fuzzy;
mod schema;
mod word;

use std::ops::{Bound, RangeInclusive};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tantivy::columnar::StrColumn;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, EmptyQuery, Occur, Query, RangeQuery,
    TermQuery, TermSetQuery,
};
use tantivy::schema::{Facet, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

pub use crate::cache::MatchCacheStats;
use crate::cache::{AnyTermQuery, MatchCache};
use crate::collect::{ColumnCache, PageCollector, SegmentColumns};
use crate::fuzzy::WordFuzzyQuery;
use crate::schema::{attribute_key, category_segments, Fields};
use crate::word::WordQuery;

/// Memory the index writer may use for buffered documents before it writes a segment.
pub const WRITER_HEAP_BYTES: usize = 64 * 1024 * 1024;
/// Memory the match cache may take, per index: the documents of the terms that query words,
/// their misspellings and the filters reach, per segment, kept between searches (see `cache.rs`).
/// A set costs at most a bit per product of its segment (125 KiB at 1M products); the benchmark's
/// query mix at 1M products uses about 46 MB of it.
pub const MATCH_CACHE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Largest page a search returns; a larger `limit` is cut to this.
pub const LIMIT_MAX: usize = 100;
/// Most completions [`SearchIndex::suggest`] returns.
pub const SUGGESTIONS_MAX: usize = 10;
/// Most values per facet list, the largest counts first.
pub const FACET_VALUES_MAX: usize = 50;

/// Fuzzy matches score this much (a constant, like all of tantivy's automaton queries), below any
/// exact match, which adds its BM25 score on top.
const FUZZY_BOOST: f32 = 0.5;
/// Title matches count this much more than matches elsewhere.
const TITLE_BOOST: f32 = 2.0;
/// At most this many indexed words complete the last word of a suggestion prefix.
const PREFIX_EXPANSIONS_MAX: usize = 256;

/// One product as the index sees it, built by the caller from the catalog and stock state.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductDoc {
    pub product_id: u64,
    pub title: String,
    pub description: String,
    pub brand: String,
    /// Path like `"electronics/laptops"`.
    pub category: String,
    /// `(name, value)`, the value rendered as text (`"red"`, `"250"`, `"true"`).
    pub attributes: Vec<(String, String)>,
    /// Price of the cheapest variant.
    pub price_cents: i64,
    pub currency: String,
    /// Average rating; `None` when there are no reviews.
    pub rating: Option<f64>,
    pub created_at_unix: i64,
    /// Warehouses where some variant has `available > 0`.
    pub stock_warehouses: Vec<u64>,
}

/// Result order. Every order ends with `product_id` ascending, so pages are stable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Score descending.
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    /// Rating descending, products without a rating last.
    Rating,
    /// `created_at_unix` descending.
    Newest,
}

/// A search: words, filters, order and page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchQuery {
    /// Every word must match (AND) in title, description, brand or attribute values. Empty
    /// matches every product (browsing by filters).
    pub text: String,
    /// Category subtree: `"electronics"` matches `"electronics/laptops"` (case-insensitive).
    pub category: Option<String>,
    /// Exact brand, case-insensitive.
    pub brand: Option<String>,
    pub min_price_cents: Option<i64>,
    pub max_price_cents: Option<i64>,
    /// `attr.<name>=<value>`: all must match; name and value case-insensitive.
    pub attributes: Vec<(String, String)>,
    /// Hide products with no stock warehouse.
    pub in_stock_only: bool,
    /// `Some(ws)`: keep only products with a stock warehouse in `ws` (computed by the caller from
    /// the postal code); `Some(vec![])` matches nothing.
    pub deliverable_from: Option<Vec<u64>>,
    pub sort: Sort,
    pub offset: usize,
    /// Cut to [`LIMIT_MAX`].
    pub limit: usize,
}

/// One product of a result page.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub product_id: u64,
    pub title: String,
    pub brand: String,
    pub category: String,
    pub price_cents: i64,
    pub currency: String,
    pub rating: Option<f64>,
    pub stock_warehouses: Vec<u64>,
    /// Relevance score; `0.0` for the other orders, which do not compute it.
    pub score: f32,
}

/// How many matching products have a facet value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

/// A page of hits and the counts over every match of the query and filters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// Products matching the query and filters.
    pub total: u64,
    /// Per brand as displayed, largest count first (ties by value), at most [`FACET_VALUES_MAX`].
    pub brand_facets: Vec<FacetCount>,
    /// Per category path, and per ancestor path (`"electronics"` counts every product under it),
    /// largest count first, at most [`FACET_VALUES_MAX`].
    pub category_facets: Vec<FacetCount>,
}

/// Operating errors of the index. Bad queries are not errors: they match nothing.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index commit payload is not an offset: {payload:?}")]
    CorruptPayload { payload: String },
}

/// The product index: buffered writes, explicit commits, searches on the last commit.
///
/// `Send + Sync`; share it through an `Arc`. Writes take a mutex around the tantivy writer;
/// searches never wait for it.
pub struct SearchIndex {
    index: Index,
    fields: Fields,
    analyzer: TextAnalyzer,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    committed_offset: AtomicU64,
    columns: ColumnCache,
    matches: Arc<MatchCache>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("committed_offset", &self.committed_offset())
            .field("doc_count", &self.doc_count())
            .finish_non_exhaustive()
    }
}

/// Edits tolerated in a query word of `letters` characters: 0 below 4, 1 from 4, 2 from 8.
pub fn edit_distance_for(letters: usize) -> u8 {
    match letters {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it (and the directory) when absent.
    ///
    /// An index written with another schema is an error; rebuild it with `clear` after removing
    /// the directory.
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = Fields::build();
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema)?;
        SearchIndex::from_index(index, fields)
    }

    /// A fresh index in memory, for tests and tools.
    pub fn open_in_memory() -> Result<SearchIndex, SearchError> {
        let (schema, fields) = Fields::build();
        SearchIndex::from_index(Index::create_in_ram(schema), fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<SearchIndex, SearchError> {
        let analyzer = schema::analyzer();
        index.tokenizers().register(schema::TOKENIZER_NAME, analyzer.clone());
        let payload = index.load_metas()?.payload;
        let committed_offset = match payload {
            None => 0,
            Some(payload) => {
                payload.parse::<u64>().map_err(|_| SearchError::CorruptPayload { payload })?
            }
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        let writer = index.writer_with_num_threads(threads, WRITER_HEAP_BYTES)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(SearchIndex {
            index,
            fields,
            analyzer,
            writer: Mutex::new(writer),
            reader,
            committed_offset: AtomicU64::new(committed_offset),
            columns: ColumnCache::default(),
            matches: Arc::new(MatchCache::new(MATCH_CACHE_BYTES_MAX)),
        })
    }

    /// The same index with a match cache of `bytes_max` bytes instead of
    /// [`MATCH_CACHE_BYTES_MAX`]; 0 turns the cache off (for comparisons and tests).
    #[must_use]
    pub fn with_match_cache_bytes(mut self, bytes_max: usize) -> SearchIndex {
        self.matches = Arc::new(MatchCache::new(bytes_max));
        self
    }

    /// Counters of the match cache since the index was opened.
    pub fn match_cache_stats(&self) -> MatchCacheStats {
        self.matches.stats()
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().expect("a thread panicked while holding the search index writer")
    }

    /// Adds `doc`, replacing any document with the same `product_id`. Searchable after the
    /// next [`commit`](Self::commit).
    pub fn upsert(&self, doc: &ProductDoc) -> Result<(), SearchError> {
        let document = self.document(doc);
        let writer = self.writer();
        writer.delete_term(Term::from_field_u64(self.fields.product_id, doc.product_id));
        writer.add_document(document)?;
        Ok(())
    }

    /// Removes the product. Takes effect at the next [`commit`](Self::commit).
    pub fn delete(&self, product_id: u64) -> Result<(), SearchError> {
        self.writer().delete_term(Term::from_field_u64(self.fields.product_id, product_id));
        Ok(())
    }

    /// Removes every product, including those upserted but not yet committed; upserts after
    /// this call are kept. Takes effect at the next [`commit`](Self::commit).
    pub fn clear(&self) -> Result<(), SearchError> {
        self.writer().delete_query(Box::new(AllQuery))?;
        Ok(())
    }

    /// Makes every buffered change durable and searchable, recording `offset` (the catalog event
    /// offset the changes reach) with it.
    pub fn commit(&self, offset: u64) -> Result<(), SearchError> {
        {
            let mut writer = self.writer();
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&offset.to_string());
            prepared.commit()?;
            self.committed_offset.store(offset, Ordering::Release);
        }
        self.reload()
    }

    /// Points searches at the last commit and forgets what was cached for segments it dropped.
    fn reload(&self) -> Result<(), SearchError> {
        self.reader.reload()?;
        let live = self
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .map(tantivy::SegmentReader::segment_id)
            .collect();
        self.columns.retain(&live);
        self.matches.retain(&live);
        Ok(())
    }

    /// The offset given to the last [`commit`](Self::commit), 0 for a new index.
    pub fn committed_offset(&self) -> u64 {
        self.committed_offset.load(Ordering::Acquire)
    }

    /// Products visible to searches (the last commit).
    pub fn doc_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Merges every segment into one and waits for it. For tools and benchmarks after a bulk
    /// load; the merge policy keeps the segment count in check during normal operation.
    pub fn merge_segments(&self) -> Result<(), SearchError> {
        let segment_ids = self.index.searchable_segment_ids()?;
        if segment_ids.len() > 1 {
            self.writer().merge(&segment_ids).wait()?;
        }
        self.reload()
    }

    /// Segments visible to searches; fewer is faster.
    pub fn segment_count(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Runs `query` against the last commit.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, SearchError> {
        let limit = query.limit.min(LIMIT_MAX);
        let scoring = query.sort == Sort::Relevance;
        let (tantivy_query, price_cents) = self.tantivy_query(query, scoring);
        let searcher = self.reader.searcher();
        let collector = PageCollector {
            sort: query.sort,
            top_k: query.offset.saturating_add(limit),
            price_cents,
            columns: &self.columns,
        };
        let collected = searcher.search(&*tantivy_query, &collector)?;
        let mut hits = Vec::with_capacity(limit);
        for candidate in collected.candidates.iter().skip(query.offset).take(limit) {
            let score = if scoring { candidate.score } else { 0.0 };
            hits.push(self.hit(&searcher, candidate.address, score)?);
        }
        Ok(SearchResults {
            hits,
            total: collected.total,
            brand_facets: facet_list(collected.brand_counts),
            category_facets: facet_list(with_ancestors(collected.category_counts)),
        })
    }

    /// Up to `limit` (at most [`SUGGESTIONS_MAX`]) product titles that contain every word of
    /// `prefix`, the last one as a word prefix; case- and accent-insensitive, deduplicated.
    /// Titles that start with the prefix come first, then by rating, in-stock before sold-out,
    /// shorter first.
    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<String>, SearchError> {
        let limit = limit.min(SUGGESTIONS_MAX);
        let words = self.words(prefix);
        let Some((last, complete)) = words.split_last() else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let expansions = self.expansions(&searcher, last)?;
        if expansions.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = complete
            .iter()
            .map(|word| (Occur::Must, self.term_query(self.fields.title, word)))
            .collect();
        clauses.push((Occur::Must, Box::new(TermSetQuery::new(expansions))));
        let query = BooleanQuery::new(clauses);
        let collector = PageCollector {
            sort: Sort::Rating,
            top_k: limit * 8,
            price_cents: None,
            columns: &self.columns,
        };
        let collected = searcher.search(&query, &collector)?;
        let wanted = words.join(" ");
        let mut found: Vec<(bool, std::cmp::Reverse<u64>, usize, String)> = Vec::new();
        for candidate in &collected.candidates {
            let hit = self.hit(&searcher, candidate.address, 0.0)?;
            let in_stock = !hit.stock_warehouses.is_empty();
            let starts = self.words(&hit.title).join(" ").starts_with(&wanted);
            found.push((!starts, std::cmp::Reverse(u64::from(in_stock)), found.len(), hit.title));
        }
        // Candidates arrive by rating; keep that order within each group.
        found.sort();
        let mut seen = std::collections::HashSet::new();
        let mut suggestions = Vec::with_capacity(limit);
        for (_, _, _, title) in found {
            if seen.insert(title.to_lowercase()) {
                suggestions.push(title);
                if suggestions.len() == limit {
                    break;
                }
            }
        }
        Ok(suggestions)
    }

    /// Indexed title words starting with `prefix`, the most frequent first.
    fn expansions(&self, searcher: &Searcher, prefix: &str) -> Result<Vec<Term>, SearchError> {
        let mut words = std::collections::HashMap::<Vec<u8>, u64>::new();
        for segment in searcher.segment_readers() {
            let inverted_index = segment.inverted_index(self.fields.title)?;
            let mut stream = inverted_index.terms().range().ge(prefix).into_stream()?;
            while stream.advance() {
                if !stream.key().starts_with(prefix.as_bytes()) {
                    break;
                }
                *words.entry(stream.key().to_vec()).or_default() +=
                    u64::from(stream.value().doc_freq);
            }
        }
        let mut words: Vec<(Vec<u8>, u64)> = words.into_iter().collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        words.truncate(PREFIX_EXPANSIONS_MAX);
        Ok(words
            .into_iter()
            .filter_map(|(bytes, _)| String::from_utf8(bytes).ok())
            .map(|word| Term::from_field_text(self.fields.title, &word))
            .collect())
    }

    /// The words of `text` as the index cut them.
    fn words(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
        words
    }

    fn document(&self, doc: &ProductDoc) -> TantivyDocument {
        let f = &self.fields;
        let mut out = TantivyDocument::default();
        out.add_u64(f.product_id, doc.product_id);
        out.add_text(f.title, &doc.title);
        out.add_text(f.all, &doc.title);
        out.add_text(f.all, &doc.description);
        out.add_text(f.all, &doc.brand);
        out.add_text(f.brand, &doc.brand);
        out.add_text(f.brand_key, doc.brand.trim().to_lowercase());
        out.add_text(f.category, &doc.category);
        out.add_facet(f.category_path, Facet::from_path(category_segments(&doc.category)));
        for (name, value) in &doc.attributes {
            out.add_text(f.all, value);
            out.add_text(f.attribute, attribute_key(name, value));
        }
        out.add_i64(f.price_cents, doc.price_cents);
        out.add_text(f.currency, &doc.currency);
        if let Some(rating) = doc.rating {
            out.add_f64(f.rating, rating);
        }
        out.add_i64(f.created_at_unix, doc.created_at_unix);
        for &warehouse in &doc.stock_warehouses {
            out.add_u64(f.stock_warehouse, warehouse);
        }
        out.add_u64(f.in_stock, u64::from(!doc.stock_warehouses.is_empty()));
        out
    }

    /// One hit, read from the fast fields of its segment.
    fn hit(
        &self,
        searcher: &Searcher,
        address: DocAddress,
        score: f32,
    ) -> Result<SearchHit, SearchError> {
        let columns = self.columns.get(searcher.segment_reader(address.segment_ord))?;
        let SegmentColumns { title, brand, category, currency, .. } = &*columns;
        let doc = address.doc_id;
        let name = |column: &Option<StrColumn>, names: &[String]| -> String {
            column
                .as_ref()
                .and_then(|column| column.term_ords(doc).next())
                .and_then(|ordinal| names.get(usize::try_from(ordinal).ok()?))
                .cloned()
                .unwrap_or_default()
        };
        let mut title_text = String::new();
        if let Some(title) = title {
            if let Some(ordinal) = title.term_ords(doc).next() {
                title.ord_to_str(ordinal, &mut title_text)?;
            }
        }
        Ok(SearchHit {
            product_id: columns.product_id.first(doc).unwrap_or_default(),
            title: title_text,
            brand: name(brand, &columns.brand_names),
            category: name(category, &columns.category_names),
            price_cents: columns.price_cents.first(doc).unwrap_or_default(),
            currency: name(currency, &columns.currency_names),
            rating: columns.rating.first(doc),
            stock_warehouses: columns.stock_warehouse.values_for_doc(doc).collect(),
            score,
        })
    }

    fn term_query(&self, field: tantivy::schema::Field, text: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::WithFreqs))
    }

    /// The words (AND), each matched exactly or fuzzily, then the filters, which do not score;
    /// and the price range when the collector is to check it (see below).
    fn tantivy_query(
        &self,
        query: &SearchQuery,
        scoring: bool,
    ) -> (Box<dyn Query>, Option<RangeInclusive<i64>>) {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in self.words(&query.text) {
            clauses.push((Occur::Must, self.word_query(&word, scoring)));
        }
        let mut filters: Vec<Box<dyn Query>> = Vec::new();
        if let Some(category) = &query.category {
            let segments = category_segments(category);
            if !segments.is_empty() {
                filters.push(
                    self.term_filter(Term::from_facet(
                        f.category_path,
                        &Facet::from_path(segments),
                    )),
                );
            }
        }
        if let Some(brand) = &query.brand {
            filters.push(
                self.term_filter(Term::from_field_text(f.brand_key, &brand.trim().to_lowercase())),
            );
        }
        for (name, value) in &query.attributes {
            filters.push(
                self.term_filter(Term::from_field_text(f.attribute, &attribute_key(name, value))),
            );
        }
        if query.in_stock_only {
            filters.push(self.term_filter(Term::from_field_u64(f.in_stock, 1)));
        }
        if let Some(warehouses) = &query.deliverable_from {
            if warehouses.is_empty() {
                return (Box::new(EmptyQuery), None);
            }
            let mut warehouses = warehouses.clone();
            warehouses.sort_unstable();
            warehouses.dedup();
            let terms = warehouses
                .iter()
                .map(|&warehouse| Term::from_field_u64(f.stock_warehouse, warehouse))
                .collect();
            filters.push(Box::new(AnyTermQuery::new(terms, Arc::clone(&self.matches))));
        }
        let mut price_cents = None;
        if query.min_price_cents.is_some() || query.max_price_cents.is_some() {
            let (min, max) = (query.min_price_cents, query.max_price_cents);
            if clauses.is_empty() && filters.is_empty() {
                // Only a price range: tantivy's range scan over the price column finds the
                // matches fastest.
                let bound = |value: Option<i64>| {
                    value.map_or(Bound::Unbounded, |cents| {
                        Bound::Included(Term::from_field_i64(f.price_cents, cents))
                    })
                };
                filters.push(Box::new(RangeQuery::new(bound(min), bound(max))));
            } else {
                // With other clauses, checking the price of what they match is cheaper than
                // intersecting them with a range scan, which reads the column ahead of them in
                // blocks (profiling showed it at a twentieth of all query time at 1M products).
                price_cents = Some(min.unwrap_or(i64::MIN)..=max.unwrap_or(i64::MAX));
            }
        }
        for filter in filters {
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
        }
        if clauses.is_empty() {
            return (Box::new(AllQuery), None);
        }
        (Box::new(BooleanQuery::new(clauses)), price_cents)
    }

    /// The documents holding `term`, from the match cache: a filter's set is dense more often
    /// than not (in stock: 85 % of products), and testing a bit is cheaper than a skip-list seek.
    fn term_filter(&self, term: Term) -> Box<dyn Query> {
        Box::new(AnyTermQuery::new(vec![term], Arc::clone(&self.matches)))
    }

    /// One query word: an exact or (by length) fuzzy match in `all`. When scoring, exact matches
    /// in `all` and in `title` add their BM25 on top of the fuzzy constant, so they rank first.
    fn word_query(&self, word: &str, scoring: bool) -> Box<dyn Query> {
        let f = &self.fields;
        // Numbers and model codes ("250", "a100") are matched exactly: a typo in them is another
        // product, not a misspelling.
        let distance = if word.bytes().any(|b| b.is_ascii_digit()) {
            0
        } else {
            edit_distance_for(word.chars().count())
        };
        let exact = self.term_query(f.all, word);
        let fuzzy = (distance > 0)
            .then(|| WordFuzzyQuery::new(f.all, word, distance, Arc::clone(&self.matches)));
        if !scoring {
            // Without scores only the matching set counts, and the fuzzy set holds the exact one.
            return match fuzzy {
                Some(fuzzy) => Box::new(fuzzy),
                None => exact,
            };
        }
        // A title word is a word of `all` too, and the fuzzy set holds the exact one: the word
        // matches what its widest part matches, and the others only add to the score.
        let mut parts: Vec<Box<dyn Query>> =
            vec![exact, Box::new(BoostQuery::new(self.term_query(f.title, word), TITLE_BOOST))];
        let matching = match fuzzy {
            Some(fuzzy) => {
                parts.push(Box::new(BoostQuery::new(Box::new(fuzzy), FUZZY_BOOST)));
                2
            }
            None => 0,
        };
        Box::new(WordQuery::new(parts, matching))
    }
}

/// Adds each path's count to every ancestor path (`a/b/c` also counts for `a/b` and `a`).
fn with_ancestors(counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let mut totals = std::collections::HashMap::<String, u64>::new();
    for (path, count) in counts {
        let mut end = path.len();
        *totals.entry(path.clone()).or_default() += count;
        while let Some(slash) = path[..end].rfind('/') {
            end = slash;
            if end > 0 {
                *totals.entry(path[..end].to_string()).or_default() += count;
            }
        }
    }
    totals.into_iter().collect()
}

/// Largest count first, ties by value, so the list is the same on every call.
fn facet_list(counts: Vec<(String, u64)>) -> Vec<FacetCount> {
    let mut counts: Vec<FacetCount> = counts
        .into_iter()
        .filter(|(value, _)| !value.is_empty())
        .map(|(value, count)| FacetCount { value, count })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    counts.truncate(FACET_VALUES_MAX);
    counts
}
