//! Relevance, filters, facets, orders and paging on a fixed catalog of 30 products written by
//! hand, plus the index's life cycle (upsert, delete, clear, commit, reopen) and suggestions.

use std::collections::BTreeSet;

use surge_search_svc::{ProductDoc, SearchIndex, SearchQuery, SearchResults, Sort};

type Row = (
    u64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    i64,
    Option<f64>,
    &'static [u64],
);

/// id, title, description, brand, category, attributes, price, rating, stock warehouses.
/// `created_at_unix` is `1000 + 10 * id`. Equal prices (7900, 3900, 29900) test tie-breaks.
const CATALOG: &[Row] = &[
    (
        1,
        "UltraSlim Laptop 14",
        "Light aluminium notebook for travel",
        "Acme",
        "electronics/laptops",
        &[("color", "silver"), ("ram", "16")],
        99900,
        Some(4.5),
        &[1],
    ),
    (
        2,
        "Gaming Laptop 17",
        "Fast graphics and a bright display",
        "Orion",
        "electronics/laptops",
        &[("color", "black"), ("ram", "32")],
        189900,
        Some(4.8),
        &[1, 2],
    ),
    (
        3,
        "Budget Laptop 15",
        "Everyday computing for students",
        "Acme",
        "electronics/laptops",
        &[("color", "black"), ("ram", "8")],
        49900,
        None,
        &[2],
    ),
    (
        4,
        "Wireless Headphones",
        "Over-ear with a carrying case",
        "Sonora",
        "electronics/audio",
        &[("color", "black")],
        19900,
        Some(4.2),
        &[1],
    ),
    (
        5,
        "Noise Cancelling Headphones",
        "Quiet flights and focused work",
        "Sonora",
        "electronics/audio",
        &[("color", "white")],
        29900,
        Some(4.7),
        &[3],
    ),
    (
        6,
        "Bluetooth Speaker",
        "Portable and waterproof",
        "Orion",
        "electronics/audio",
        &[("color", "red")],
        7900,
        Some(3.9),
        &[],
    ),
    (
        7,
        "Espresso Machine",
        "Fifteen bar pump and milk frother",
        "Brewmaster",
        "home/kitchen",
        &[("color", "silver")],
        34900,
        Some(4.4),
        &[2],
    ),
    (
        8,
        "Drip Coffee Maker",
        "Brews twelve cups",
        "Brewmaster",
        "home/kitchen",
        &[("color", "black")],
        5900,
        Some(4.0),
        &[1],
    ),
    (
        9,
        "Chef Knife",
        "Forged blade, full tang",
        "Edgecraft",
        "home/kitchen",
        &[("material", "steel")],
        8900,
        Some(4.9),
        &[3],
    ),
    (
        10,
        "Cast Iron Skillet",
        "Preseasoned pan for searing",
        "Ironside",
        "home/kitchen",
        &[("material", "iron")],
        3900,
        Some(4.6),
        &[1, 3],
    ),
    (
        11,
        "Running Shoes",
        "Cushioned road trainers",
        "Stride",
        "sports/footwear",
        &[("color", "blue"), ("size", "42")],
        12900,
        Some(4.1),
        &[2],
    ),
    (
        12,
        "Trail Running Shoes",
        "Grippy soles for mud",
        "Stride",
        "sports/footwear",
        &[("color", "green"), ("size", "43")],
        14900,
        None,
        &[1],
    ),
    (
        13,
        "Yoga Mat",
        "Non-slip and thick",
        "Zenflex",
        "sports/fitness",
        &[("color", "purple")],
        2900,
        Some(4.3),
        &[3],
    ),
    (
        14,
        "Adjustable Dumbbells",
        "Quick weight change",
        "Ironside",
        "sports/fitness",
        &[("weight", "24")],
        29900,
        Some(4.7),
        &[2],
    ),
    (
        15,
        "Mountain Bicycle",
        "Front suspension and disc brakes",
        "Ridgeline",
        "sports/cycling",
        &[("color", "red")],
        59900,
        Some(4.5),
        &[],
    ),
    (
        16,
        "Cycling Helmet",
        "Ventilated and light",
        "Ridgeline",
        "sports/cycling",
        &[("color", "white")],
        6900,
        Some(4.4),
        &[1],
    ),
    (
        17,
        "Children's Encyclopedia",
        "Illustrated facts for curious minds",
        "Papyrus",
        "books/reference",
        &[],
        3900,
        Some(4.8),
        &[2],
    ),
    (
        18,
        "Mystery Novel",
        "A detective story set in Lisbon",
        "Papyrus",
        "books/fiction",
        &[],
        1500,
        Some(3.7),
        &[3],
    ),
    (
        19,
        "Science Fiction Anthology",
        "Stories of distant worlds",
        "Papyrus",
        "books/fiction",
        &[],
        2200,
        None,
        &[1],
    ),
    (
        20,
        "Smartphone Case",
        "Slim protective shell",
        "Acme",
        "electronics/accessories",
        &[("color", "black")],
        1900,
        Some(4.0),
        &[1, 2, 3],
    ),
    (
        21,
        "USB Charger",
        "Two ports, fast charging",
        "Acme",
        "electronics/accessories",
        &[("color", "white")],
        2500,
        Some(4.1),
        &[2],
    ),
    (
        22,
        "Mechanical Keyboard",
        "Tactile switches and backlight",
        "Orion",
        "electronics/accessories",
        &[("color", "black"), ("switch", "brown")],
        11900,
        Some(4.6),
        &[3],
    ),
    (
        23,
        "Office Chair",
        "Lumbar support and armrests",
        "Comfortline",
        "home/furniture",
        &[("color", "grey")],
        24900,
        Some(4.2),
        &[1],
    ),
    (
        24,
        "Standing Desk",
        "Electric lift with a cable clamp",
        "Comfortline",
        "home/furniture",
        &[("color", "oak")],
        44900,
        Some(4.5),
        &[2],
    ),
    (
        25,
        "Table Lamp",
        "Warm light for reading",
        "Lumina",
        "home/lighting",
        &[("color", "white")],
        3400,
        Some(3.8),
        &[3],
    ),
    (26, "Ceiling Lamp", "Dimmable fixture", "Lumina", "home/lighting", &[], 7400, None, &[1]),
    (
        27,
        "Winter Jacket",
        "Down filled and hooded",
        "Northpeak",
        "fashion/outerwear",
        &[("color", "black"), ("size", "L")],
        17900,
        Some(4.6),
        &[2],
    ),
    (
        28,
        "Rain Jacket",
        "Packable shell",
        "Northpeak",
        "fashion/outerwear",
        &[("color", "yellow"), ("size", "M")],
        9900,
        Some(4.0),
        &[3],
    ),
    (
        29,
        "Wool Sweater",
        "Merino crew neck",
        "Northpeak",
        "fashion/knitwear",
        &[("color", "grey")],
        7900,
        Some(4.3),
        &[1],
    ),
    (
        30,
        "Leather Wallet",
        "Six card slots",
        "Hideworks",
        "fashion/accessories",
        &[("color", "brown")],
        4900,
        Some(4.4),
        &[2],
    ),
];

fn product(row: &Row) -> ProductDoc {
    let &(product_id, title, description, brand, category, attributes, price_cents, rating, stock) =
        row;
    ProductDoc {
        product_id,
        title: title.to_string(),
        description: description.to_string(),
        brand: brand.to_string(),
        category: category.to_string(),
        attributes: attributes
            .iter()
            .map(|&(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        price_cents,
        currency: "EUR".to_string(),
        rating,
        created_at_unix: 1000 + 10 * i64::try_from(product_id).unwrap(),
        stock_warehouses: stock.to_vec(),
    }
}

fn catalog_index() -> SearchIndex {
    let index = SearchIndex::open_in_memory().unwrap();
    load(&index);
    index.commit(1).unwrap();
    index
}

fn load(index: &SearchIndex) {
    for row in CATALOG {
        index.upsert(&product(row)).unwrap();
    }
}

/// Every product, in or out of stock, first page of 100, by relevance.
fn query(text: &str) -> SearchQuery {
    SearchQuery { text: text.to_string(), limit: 100, ..SearchQuery::default() }
}

fn ids(results: &SearchResults) -> Vec<u64> {
    results.hits.iter().map(|hit| hit.product_id).collect()
}

fn id_set(results: &SearchResults) -> BTreeSet<u64> {
    results.hits.iter().map(|hit| hit.product_id).collect()
}

fn search(index: &SearchIndex, query: &SearchQuery) -> SearchResults {
    let results = index.search(query).unwrap();
    assert!(results.total >= results.hits.len() as u64);
    results
}

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

#[test]
fn exact_words_match_title_description_brand_and_attribute_values() {
    let index = catalog_index();
    assert_eq!(id_set(&search(&index, &query("laptop"))), set(&[1, 2, 3]));
    assert_eq!(id_set(&search(&index, &query("LAPTOP!"))), set(&[1, 2, 3]));
    assert_eq!(id_set(&search(&index, &query("frother"))), set(&[7]), "description");
    assert_eq!(id_set(&search(&index, &query("sonora"))), set(&[4, 5]), "brand");
    assert_eq!(id_set(&search(&index, &query("purple"))), set(&[13]), "attribute value");
    assert_eq!(id_set(&search(&index, &query("Lisbön"))), set(&[18]), "ASCII folding");
    let hit = &search(&index, &query("espresso")).hits[0];
    assert_eq!(hit.title, "Espresso Machine");
    assert_eq!(hit.brand, "Brewmaster");
    assert_eq!(hit.category, "home/kitchen");
    assert_eq!(hit.price_cents, 34900);
    assert_eq!(hit.currency, "EUR");
    assert_eq!(hit.rating, Some(4.4));
    assert_eq!(hit.stock_warehouses, vec![2]);
    assert!(hit.score > 0.0);
    assert_eq!(search(&index, &query("headphones")).total, 2);
}

#[test]
fn every_word_must_match() {
    let index = catalog_index();
    assert_eq!(id_set(&search(&index, &query("running shoes"))), set(&[11, 12]));
    assert_eq!(id_set(&search(&index, &query("trail shoes"))), set(&[12]));
    assert_eq!(id_set(&search(&index, &query("acme black"))), set(&[3, 20]));
    assert!(search(&index, &query("laptop red")).hits.is_empty());
    assert_eq!(search(&index, &query("laptop red")).total, 0);
}

#[test]
fn one_typo_on_words_of_four_to_seven_letters() {
    let index = catalog_index();
    assert_eq!(id_set(&search(&index, &query("lapotp"))), set(&[1, 2, 3]), "transposition");
    assert_eq!(id_set(&search(&index, &query("laptp"))), set(&[1, 2, 3]), "deletion");
    assert_eq!(id_set(&search(&index, &query("espreso"))), set(&[7]));
    assert_eq!(id_set(&search(&index, &query("wallat"))), set(&[30]), "substitution");
    assert_eq!(id_set(&search(&index, &query("esprsso machne"))), set(&[7]));
    // Two edits on a word under 8 letters are too many.
    assert!(search(&index, &query("lpatpo")).hits.is_empty());
    assert!(search(&index, &query("wlalat")).hits.is_empty());
}

#[test]
fn two_typos_on_words_of_eight_letters_or_more() {
    let index = catalog_index();
    assert_eq!(id_set(&search(&index, &query("headfones"))), set(&[4, 5]));
    assert_eq!(id_set(&search(&index, &query("encylopdia"))), set(&[17]));
    assert_eq!(id_set(&search(&index, &query("mechancal keybord"))), set(&[22]));
    // Three edits are too many at any length.
    assert!(search(&index, &query("hedfons")).hits.is_empty());
}

#[test]
fn no_typo_tolerance_under_four_letters() {
    let index = catalog_index();
    assert_eq!(id_set(&search(&index, &query("mat"))), set(&[13]));
    assert_eq!(id_set(&search(&index, &query("usb"))), set(&[21]));
    assert!(search(&index, &query("hat")).hits.is_empty(), "one edit from mat");
    assert!(search(&index, &query("usv")).hits.is_empty(), "one edit from usb");
    // Four letters: one edit is tolerated ("mats" -> "mat").
    assert_eq!(id_set(&search(&index, &query("mats"))), set(&[13]));
}

#[test]
fn exact_matches_rank_above_fuzzy_ones_and_title_above_description() {
    let index = catalog_index();
    // "lamp" is in two titles; "clamp" (one edit) only in the desk's description.
    let results = search(&index, &query("lamp"));
    assert_eq!(id_set(&results), set(&[24, 25, 26]));
    assert_eq!(results.hits[2].product_id, 24, "the fuzzy match is last");
    assert!(results.hits[1].score > results.hits[2].score);
    // A title match beats a description match.
    // "case" is in 20's title and 4's description; "cast" (one edit) in 10's title.
    assert_eq!(ids(&search(&index, &query("case"))), vec![20, 4, 10]);
    // "laptops" (7 letters) is one edit from "laptop".
    let results = search(&index, &query("laptops"));
    assert_eq!(id_set(&results), set(&[1, 2, 3]));
}

#[test]
fn category_filter_matches_a_subtree() {
    let index = catalog_index();
    let mut q = query("");
    q.category = Some("electronics".to_string());
    assert_eq!(id_set(&search(&index, &q)), set(&[1, 2, 3, 4, 5, 6, 20, 21, 22]));
    q.category = Some("Electronics/Audio".to_string());
    assert_eq!(id_set(&search(&index, &q)), set(&[4, 5, 6]));
    q.category = Some("electronics/laptops/".to_string());
    assert_eq!(id_set(&search(&index, &q)), set(&[1, 2, 3]));
    q.category = Some("elec".to_string());
    assert_eq!(search(&index, &q).total, 0, "a subtree, not a string prefix");
    q.text = "black".to_string();
    q.category = Some("electronics".to_string());
    assert_eq!(id_set(&search(&index, &q)), set(&[2, 3, 4, 20, 22]));
}

#[test]
fn brand_filter_is_exact_and_case_insensitive() {
    let index = catalog_index();
    let mut q = query("");
    q.brand = Some("ACME".to_string());
    assert_eq!(id_set(&search(&index, &q)), set(&[1, 3, 20, 21]));
    q.brand = Some("acm".to_string());
    assert_eq!(search(&index, &q).total, 0);
    q.brand = Some("orion".to_string());
    q.text = "laptop".to_string();
    assert_eq!(id_set(&search(&index, &q)), set(&[2]));
}

#[test]
fn price_filter_is_inclusive_on_both_ends() {
    let index = catalog_index();
    let mut q = query("");
    q.min_price_cents = Some(5900);
    q.max_price_cents = Some(9900);
    assert_eq!(id_set(&search(&index, &q)), set(&[6, 8, 9, 16, 26, 28, 29]));
    q.min_price_cents = None;
    q.max_price_cents = Some(2200);
    assert_eq!(id_set(&search(&index, &q)), set(&[18, 19, 20]));
    q.min_price_cents = Some(100_000);
    q.max_price_cents = None;
    assert_eq!(id_set(&search(&index, &q)), set(&[2]));
}

#[test]
fn attribute_filters_all_match_case_insensitively() {
    let index = catalog_index();
    let mut q = query("");
    q.attributes = vec![("color".to_string(), "BLACK".to_string())];
    assert_eq!(id_set(&search(&index, &q)), set(&[2, 3, 4, 8, 20, 22, 27]));
    q.attributes.push(("ram".to_string(), "32".to_string()));
    assert_eq!(id_set(&search(&index, &q)), set(&[2]));
    q.attributes = vec![("color".to_string(), "blac".to_string())];
    assert_eq!(search(&index, &q).total, 0, "attribute values are not fuzzy");
}

#[test]
fn in_stock_only_hides_products_without_stock() {
    let index = catalog_index();
    let mut q = query("");
    assert_eq!(search(&index, &q).total, 30);
    q.in_stock_only = true;
    let results = search(&index, &q);
    assert_eq!(results.total, 28);
    assert!(!id_set(&results).contains(&6) && !id_set(&results).contains(&15));
    q.text = "red".to_string();
    assert_eq!(search(&index, &q).total, 0, "both red products are sold out");
}

#[test]
fn deliverable_from_keeps_products_with_stock_in_those_warehouses() {
    let index = catalog_index();
    let mut q = query("");
    q.deliverable_from = Some(vec![3]);
    assert_eq!(id_set(&search(&index, &q)), set(&[5, 9, 10, 13, 18, 20, 22, 25, 28]));
    q.text = "jacket".to_string();
    q.deliverable_from = Some(vec![2, 3]);
    assert_eq!(id_set(&search(&index, &q)), set(&[27, 28]));
    q.deliverable_from = Some(vec![1]);
    assert_eq!(search(&index, &q).total, 0);
    q.deliverable_from = Some(vec![]);
    q.text = String::new();
    assert_eq!(search(&index, &q).total, 0, "no warehouse serves the code");
}

#[test]
fn facets_count_every_match_not_just_the_page() {
    let index = catalog_index();
    let mut q = query("");
    q.category = Some("electronics".to_string());
    q.limit = 2;
    let results = search(&index, &q);
    assert_eq!(results.hits.len(), 2);
    assert_eq!(results.total, 9);
    let brands: Vec<(&str, u64)> =
        results.brand_facets.iter().map(|f| (f.value.as_str(), f.count)).collect();
    assert_eq!(brands, vec![("Acme", 4), ("Orion", 3), ("Sonora", 2)]);
    let categories: Vec<(&str, u64)> =
        results.category_facets.iter().map(|f| (f.value.as_str(), f.count)).collect();
    assert_eq!(
        categories,
        vec![
            ("electronics", 9),
            ("electronics/accessories", 3),
            ("electronics/audio", 3),
            ("electronics/laptops", 3),
        ]
    );

    let mut q = query("black");
    q.in_stock_only = true;
    q.limit = 0;
    let results = search(&index, &q);
    assert!(results.hits.is_empty());
    assert_eq!(results.total, 7);
    let brand_total: u64 = results.brand_facets.iter().map(|f| f.count).sum();
    assert_eq!(brand_total, 7);
    assert!(results.category_facets.iter().any(|f| f.value == "home/kitchen" && f.count == 1));
}

fn sorted(index: &SearchIndex, mut q: SearchQuery, sort: Sort) -> Vec<u64> {
    q.sort = sort;
    ids(&search(index, &q))
}

#[test]
fn each_sort_orders_with_product_id_as_tie_break() {
    let index = catalog_index();
    let mut laptops = query("");
    laptops.category = Some("electronics/laptops".to_string());
    assert_eq!(sorted(&index, laptops.clone(), Sort::PriceAsc), vec![3, 1, 2]);
    assert_eq!(sorted(&index, laptops.clone(), Sort::PriceDesc), vec![2, 1, 3]);
    assert_eq!(sorted(&index, laptops.clone(), Sort::Rating), vec![2, 1, 3], "unrated last");
    assert_eq!(sorted(&index, laptops, Sort::Newest), vec![3, 2, 1]);

    let mut books = query("");
    books.category = Some("books".to_string());
    assert_eq!(sorted(&index, books.clone(), Sort::Rating), vec![17, 18, 19]);
    assert_eq!(sorted(&index, books, Sort::PriceAsc), vec![18, 19, 17]);

    // Equal prices: 10 and 17 at 3900, 6 and 29 at 7900, 5 and 14 at 29900.
    let all = sorted(&index, query(""), Sort::PriceAsc);
    let position = |id: u64| all.iter().position(|&x| x == id).unwrap();
    assert_eq!(position(10) + 1, position(17));
    assert_eq!(position(6) + 1, position(29));
    assert_eq!(position(5) + 1, position(14));
    let all = sorted(&index, query(""), Sort::PriceDesc);
    let position = |id: u64| all.iter().position(|&x| x == id).unwrap();
    assert_eq!(position(5) + 1, position(14));
    assert_eq!(all[0], 2);

    // Browsing (no words) scores every product alike: relevance falls back to product_id.
    assert_eq!(sorted(&index, query(""), Sort::Relevance), (1..=30).collect::<Vec<_>>());
    let newest = sorted(&index, query(""), Sort::Newest);
    assert_eq!(newest, (1..=30).rev().collect::<Vec<_>>());
}

#[test]
fn pages_are_stable_and_cover_the_result_exactly_once() {
    let index = catalog_index();
    for sort in [Sort::Relevance, Sort::PriceAsc, Sort::PriceDesc, Sort::Rating, Sort::Newest] {
        for text in ["", "black", "shoes jacket lamp"] {
            let mut q = query(text);
            q.sort = sort;
            let full = search(&index, &q);
            let mut paged = Vec::new();
            for page in 0.. {
                q.offset = page * 4;
                q.limit = 4;
                let results = search(&index, &q);
                assert_eq!(results.total, full.total);
                if results.hits.is_empty() {
                    break;
                }
                paged.extend(ids(&results));
            }
            assert_eq!(paged, ids(&full), "{sort:?} {text:?}");
            assert_eq!(paged.iter().collect::<BTreeSet<_>>().len(), paged.len());
        }
    }
    let mut q = query("");
    q.limit = 1000;
    assert_eq!(search(&index, &q).hits.len(), 30, "limit is cut to 100, more than 30");
}

#[test]
fn changes_are_invisible_until_commit() {
    let index = SearchIndex::open_in_memory().unwrap();
    load(&index);
    assert_eq!(index.doc_count(), 0);
    assert_eq!(search(&index, &query("laptop")).total, 0);
    index.commit(7).unwrap();
    assert_eq!(index.doc_count(), 30);
    assert_eq!(index.committed_offset(), 7);
    assert_eq!(search(&index, &query("laptop")).total, 3);
}

#[test]
fn upsert_replaces_by_product_id() {
    let index = catalog_index();
    let mut doc = product(&CATALOG[0]);
    doc.title = "UltraSlim Notebook 14".to_string();
    doc.stock_warehouses.clear();
    doc.price_cents = 89900;
    index.upsert(&doc).unwrap();
    index.upsert(&doc).unwrap();
    index.commit(2).unwrap();
    assert_eq!(index.doc_count(), 30);
    assert_eq!(id_set(&search(&index, &query("laptop"))), set(&[2, 3]));
    let hits = search(&index, &query("ultraslim")).hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].title, "UltraSlim Notebook 14");
    assert_eq!(hits[0].price_cents, 89900);
    let mut q = query("ultraslim");
    q.in_stock_only = true;
    assert_eq!(search(&index, &q).total, 0, "sold out is reflected");
}

#[test]
fn delete_removes() {
    let index = catalog_index();
    index.delete(2).unwrap();
    index.delete(999).unwrap();
    index.commit(2).unwrap();
    assert_eq!(index.doc_count(), 29);
    assert_eq!(id_set(&search(&index, &query("laptop"))), set(&[1, 3]));
    // A delete after an uncommitted upsert of the same product wins.
    index.upsert(&product(&CATALOG[1])).unwrap();
    index.delete(2).unwrap();
    index.commit(3).unwrap();
    assert_eq!(index.doc_count(), 29);
}

#[test]
fn clear_removes_everything_before_it() {
    let index = catalog_index();
    index.upsert(&product(&CATALOG[0])).unwrap();
    index.clear().unwrap();
    index.upsert(&product(&CATALOG[4])).unwrap();
    index.commit(9).unwrap();
    assert_eq!(index.doc_count(), 1);
    assert_eq!(ids(&search(&index, &query(""))), vec![5]);
    assert_eq!(index.committed_offset(), 9);
}

#[test]
fn survives_reopen_with_its_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("search");
    {
        let index = SearchIndex::open(&path).unwrap();
        assert_eq!(index.committed_offset(), 0);
        assert_eq!(index.doc_count(), 0);
        load(&index);
        index.commit(42).unwrap();
        index.delete(1).unwrap(); // never committed
    }
    let index = SearchIndex::open(&path).unwrap();
    assert_eq!(index.committed_offset(), 42);
    assert_eq!(index.doc_count(), 30);
    assert_eq!(id_set(&search(&index, &query("laptop"))), set(&[1, 2, 3]));
    index.delete(1).unwrap();
    index.commit(43).unwrap();
    drop(index);
    let index = SearchIndex::open(&path).unwrap();
    assert_eq!(index.committed_offset(), 43);
    assert_eq!(index.doc_count(), 29);
}

#[test]
fn suggest_completes_title_words() {
    let index = catalog_index();
    assert_eq!(
        index.suggest("run", 10).unwrap(),
        vec!["Running Shoes", "Trail Running Shoes"],
        "titles starting with the prefix first"
    );
    assert_eq!(index.suggest("TRAIL RUN", 10).unwrap(), vec!["Trail Running Shoes"]);
    let laptops = index.suggest("lap", 10).unwrap();
    assert_eq!(
        laptops,
        vec!["Gaming Laptop 17", "UltraSlim Laptop 14", "Budget Laptop 15"],
        "by rating, unrated last"
    );
    assert_eq!(index.suggest("lap", 1).unwrap().len(), 1);
    assert_eq!(index.suggest("la", 10).unwrap().len(), 5, "laptop and lamp");
    assert!(index.suggest("zzz", 10).unwrap().is_empty());
    assert!(index.suggest("  ", 10).unwrap().is_empty());
    assert!(index.suggest("lap", 50).unwrap().len() <= 10);

    let mut twin = product(&CATALOG[12]);
    twin.product_id = 31;
    twin.title = "YOGA MAT".to_string();
    index.upsert(&twin).unwrap();
    index.commit(2).unwrap();
    assert_eq!(index.suggest("yoga", 10).unwrap().len(), 1, "deduplicated");
}
