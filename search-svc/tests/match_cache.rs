//! The match cache (fuzzy words' terms, terms' documents, per segment) changes no result: the
//! same searches on a generated catalog give identical answers with the cache, without it, and
//! served from it a second time; and what a commit adds, changes or deletes is seen at once.

use surge_search_svc::{
    ProductDoc, SearchIndex, SearchQuery, SearchResults, Sort, MATCH_CACHE_BYTES_MAX,
};

const NOUNS: &[&str] = &["lantern", "kettle", "jacket", "racket", "chair", "chai", "blender"];
const ADJECTIVES: &[&str] = &["compact", "portable", "classic", "modern", "vintage", "rugged"];
const COLORS: &[&str] = &["black", "white", "silver", "green", "navy"];
const BRANDS: &[&str] = &["Acme", "Zenith", "Orbit", "Korvex", "Morvex", "Torvex"];
const DESCRIPTION: &[&str] = &["sturdy", "light", "for", "travel", "home", "outdoor", "most"];
const CATEGORIES: &[&str] = &["home/kitchen", "home/lighting", "sports/camping", "fashion/coats"];

/// A small deterministic generator, enough to vary the catalog.
fn pick<'a>(seed: &mut u64, items: &[&'a str]) -> &'a str {
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    items[usize::try_from((*seed >> 33) % items.len() as u64).unwrap()]
}

fn product(product_id: u64) -> ProductDoc {
    let mut seed = product_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let brand = pick(&mut seed, BRANDS);
    let title =
        format!("{brand} {} {} X{product_id}", pick(&mut seed, ADJECTIVES), pick(&mut seed, NOUNS));
    let description = (0..6).map(|_| pick(&mut seed, DESCRIPTION)).collect::<Vec<_>>().join(" ");
    let stock_warehouses = match product_id % 5 {
        0 => vec![],
        1 => vec![1],
        2 => vec![2, 3],
        3 => vec![3],
        _ => vec![1, 4],
    };
    ProductDoc {
        product_id,
        title,
        description,
        brand: brand.to_string(),
        category: pick(&mut seed, CATEGORIES).to_string(),
        attributes: vec![("color".to_string(), pick(&mut seed, COLORS).to_string())],
        price_cents: i64::try_from(500 + (product_id * 7919) % 20_000).unwrap(),
        currency: "EUR".to_string(),
        rating: (product_id % 4 != 0).then(|| 1.0 + (product_id % 40) as f64 / 10.0),
        created_at_unix: 1_000 + i64::try_from(product_id).unwrap(),
        stock_warehouses,
    }
}

/// Two commits, so that searches span two segments.
fn loaded(index: SearchIndex) -> SearchIndex {
    for id in 1..=400 {
        index.upsert(&product(id)).unwrap();
    }
    index.commit(1).unwrap();
    for id in 401..=700 {
        index.upsert(&product(id)).unwrap();
    }
    index.commit(2).unwrap();
    index
}

/// Words exact and misspelt (one and two edits, reaching one term or several), filters, every
/// order, first and later pages.
fn searches() -> Vec<SearchQuery> {
    let texts = [
        "lantern",
        "lantrn",
        "lanterm modern",
        "jacket",
        "racket",
        "chair",
        "chai",
        "korvex",
        "morvex kettle",
        "vintaeg kettle",
        "blendre",
        "most",
        "compact blender silver",
        "",
    ];
    let sorts = [Sort::Relevance, Sort::PriceAsc, Sort::PriceDesc, Sort::Rating, Sort::Newest];
    let mut searches = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        for (m, &sort) in sorts.iter().enumerate() {
            let mut query = SearchQuery {
                text: (*text).to_string(),
                sort,
                limit: 10,
                offset: if m % 2 == 0 { 0 } else { 10 },
                in_stock_only: n % 2 == 0,
                ..SearchQuery::default()
            };
            match (n + m) % 5 {
                0 => query.deliverable_from = Some(vec![3, 1, 3]),
                1 => query.category = Some("home".to_string()),
                2 => query.brand = Some("acme".to_string()),
                3 => {
                    query.min_price_cents = Some(2_000);
                    query.max_price_cents = Some(12_000);
                }
                _ => query.attributes = vec![("color".to_string(), "Silver".to_string())],
            }
            searches.push(query);
        }
    }
    searches
}

fn run(index: &SearchIndex) -> Vec<SearchResults> {
    searches().iter().map(|query| index.search(query).unwrap()).collect()
}

/// Like `assert_eq!` on two runs, naming the first search whose results differ.
fn assert_same(actual: &[SearchResults], expected: &[SearchResults]) {
    assert_eq!(actual.len(), expected.len());
    for ((query, actual), expected) in searches().iter().zip(actual).zip(expected) {
        assert_eq!(actual, expected, "{query:?}");
    }
}

// One index throughout: the indexing threads split documents between segments differently from
// one load to the next, which can reorder documents whose scores differ only by float rounding.
#[test]
fn results_are_the_same_with_and_without_the_cache() {
    let index = loaded(SearchIndex::open_in_memory().unwrap().with_match_cache_bytes(0));
    let reference = run(&index);
    assert_eq!(index.match_cache_stats().entries, 0);
    assert!(reference.iter().any(|results| results.total > 20), "the searches match something");
    assert!(reference.iter().any(|results| results.total == 0), "and some match nothing");
    let index = index.with_match_cache_bytes(MATCH_CACHE_BYTES_MAX);
    let first = run(&index);
    let hits_after_first = index.match_cache_stats().hits;
    let second = run(&index);
    assert_same(&first, &reference);
    assert_same(&second, &reference);
    let stats = index.match_cache_stats();
    assert!(stats.hits > hits_after_first, "the second pass is served from the cache: {stats:?}");
}

#[test]
fn results_stay_the_same_when_the_budget_forces_evictions() {
    let index = loaded(SearchIndex::open_in_memory().unwrap().with_match_cache_bytes(0));
    let reference = run(&index);
    let index = index.with_match_cache_bytes(2_000);
    assert_same(&run(&index), &reference);
    assert_same(&run(&index), &reference);
    let stats = index.match_cache_stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.bytes <= 2_000, "{stats:?}");
}

fn ids(index: &SearchIndex, text: &str) -> Vec<u64> {
    let query = SearchQuery { text: text.to_string(), limit: 100, ..SearchQuery::default() };
    let mut ids: Vec<u64> =
        index.search(&query).unwrap().hits.iter().map(|h| h.product_id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn commits_are_seen_through_the_cache() {
    let index = loaded(SearchIndex::open_in_memory().unwrap());
    // Fill the cache with the words and filters below.
    let before = ids(&index, "quasar");
    assert!(before.is_empty());
    assert!(ids(&index, "quasra").is_empty());
    let lanterns = ids(&index, "lantern");
    assert!(!lanterns.is_empty());

    // A new word, a misspelling of it, and a changed and a deleted product.
    let mut new = product(1_001);
    new.title = "Quasar lantern".to_string();
    index.upsert(&new).unwrap();
    let changed = lanterns[0];
    let mut renamed = product(changed);
    renamed.title = "Quasar kettle".to_string();
    renamed.description = "plain".to_string();
    index.upsert(&renamed).unwrap();
    let deleted = lanterns[1];
    index.delete(deleted).unwrap();
    // Not visible before the commit, even though the cache is warm.
    assert!(ids(&index, "quasar").is_empty());
    index.commit(3).unwrap();

    assert_eq!(ids(&index, "quasar"), vec![changed, 1_001]);
    assert_eq!(ids(&index, "quasra"), vec![changed, 1_001], "the fuzzy word reaches the new term");
    let after = ids(&index, "lantern");
    assert!(after.contains(&1_001));
    assert!(!after.contains(&changed) && !after.contains(&deleted));
    let deliverable = SearchQuery {
        text: "quasar".to_string(),
        deliverable_from: Some(vec![1, 2, 3, 4]),
        limit: 100,
        ..SearchQuery::default()
    };
    let in_stock = [&renamed, &new].iter().filter(|doc| !doc.stock_warehouses.is_empty()).count();
    assert_eq!(index.search(&deliverable).unwrap().total, in_stock as u64);

    // Merging drops the old segments' entries and changes no answer.
    let entries = index.match_cache_stats().entries;
    index.merge_segments().unwrap();
    assert!(index.match_cache_stats().entries < entries);
    assert_eq!(ids(&index, "quasar"), vec![changed, 1_001]);
    assert_eq!(ids(&index, "lantern"), after);
}
