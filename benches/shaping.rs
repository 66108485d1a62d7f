//! Shaping lookups and reloads with KumoMTA's default shaping file (our copy in
//! tests/data) plus a generated 200-provider file: median cost of resolving one egress
//! path (cached and uncached), and the time to load the files again.
//! Run with `cargo bench --bench shaping`.

use std::time::{Duration, Instant};
use wasmta::dns::TestZones;
use wasmta::shaping::store::{LoadOptions, load_uncached};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // 200 providers, each matching its own MX suffix, with one rolled-up domain each
        let mut providers = String::new();
        let mut zone = String::new();
        for i in 0..200 {
            providers.push_str(&format!(
                "[provider.\"p{i}\"]\nmatch = [{{MXSuffix = \".mx{i}.example\"}}]\nconnection_limit = {}\nprovider_connection_limit = 5\n\n[\"d{i}.example\"]\nmax_deliveries_per_connection = 50\n\n",
                i % 20 + 1
            ));
            zone.push_str(&format!("d{i}.example. MX 10 a.mx{i}.example.\nd{i}.example. MX 20 b.mx{i}.example.\n"));
        }
        let generated = dir.path().join("providers.toml");
        std::fs::write(&generated, providers).unwrap();
        let dns = TestZones::parse(&zone).unwrap();
        let files = vec![
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kumomta-shaping.toml").to_string(),
            generated.display().to_string(),
        ];
        let options = LoadOptions { dns_fail: wasmta::shaping::store::Check::Ignore, ..Default::default() };

        let mut loads = vec![];
        for _ in 0..7 {
            let t = Instant::now();
            let loaded = load_uncached(&files, &options, &dns).await;
            loads.push(t.elapsed());
            assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        }
        let loaded = load_uncached(&files, &options, &dns).await;
        let site = "(a|b).mx7.example";
        let mut uncached = vec![];
        let mut cached = vec![];
        for i in 0..2000 {
            let domain = format!("d{}.example", i % 200);
            let t = Instant::now();
            let p = loaded.shaping.resolve_params(&domain, "ip-1", site, &dns).await;
            uncached.push(t.elapsed());
            assert!(p.contains_key("connection_limit"));
        }
        loaded.shaping.egress_path_params("d7.example", "ip-1", site, &dns).await;
        for _ in 0..20000 {
            let t = Instant::now();
            let p = loaded.shaping.egress_path_params("d7.example", "ip-1", site, &dns).await;
            cached.push(t.elapsed());
            std::hint::black_box(p);
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("load (KumoMTA default file + 200 providers, 200 rolled-up domains): median {:.1} ms", us(median(loads)) / 1e3);
        println!("egress path, uncached (MX lookup + 200 provider matches + merge): median {:.1} µs", us(median(uncached)));
        println!("egress path, cached: median {:.2} µs", us(median(cached)));
    });
}
