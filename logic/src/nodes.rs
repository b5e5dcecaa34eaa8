//! Node selection for clients (`/goim/nodes/weighted`, gRPC `Nodes`) and the comet registry
//! it reads (`/goim/nodes/instances`).

pub use starling_cluster::Instance;

/// The comets logic can hand out. The all-in-one lists its own comet; the distributed
/// deployment reads a registry.
pub trait Registry: Send + Sync + 'static {
    fn instances(&self) -> Vec<Instance>;
}

/// goim's balancer (`internal/logic/balancer.go`): each comet's weight, boosted in the
/// client's region, corrected by how far its share of connections is from its share of
/// weight; the best five, heaviest first.
pub fn weighted<'a>(
    instances: &'a [Instance],
    region: &str,
    region_weight: f64,
) -> Vec<&'a Instance> {
    let live: Vec<&Instance> = instances
        .iter()
        .filter(|i| !i.offline() && i.meta_num("weight").is_some_and(|w| w > 0.0))
        .collect();
    let gain = |i: &Instance| {
        if !region.is_empty() && i.region == region {
            region_weight
        } else {
            1.0
        }
    };
    let total_weight: f64 = live
        .iter()
        .map(|i| i.meta_num("weight").unwrap_or(0.0) * gain(i))
        .sum();
    let total_conns: f64 = live
        .iter()
        .map(|i| i.meta_num("conn_count").unwrap_or(0.0))
        .sum();
    let mut scored: Vec<(i64, &Instance)> = live
        .into_iter()
        .map(|i| {
            let fixed = i.meta_num("weight").unwrap_or(0.0) * gain(i);
            let conns = i.meta_num("conn_count").unwrap_or(0.0);
            let weight_ratio = fixed / total_weight;
            let conn_ratio = if total_conns > 0.0 {
                conns / total_conns * 0.5
            } else {
                0.0
            };
            let current = fixed + ((weight_ratio - conn_ratio) * total_conns).round();
            (current.clamp(1.0, (1u64 << 20) as f64) as i64, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.hostname.cmp(&b.1.hostname)));
    scored.into_iter().take(5).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn inst(host: &str, weight: &str, conns: &str) -> Instance {
        let mut i = Instance::comet(host, vec![], Default::default());
        i.metadata = BTreeMap::from([
            ("weight".into(), weight.into()),
            ("conn_count".into(), conns.into()),
        ]);
        i
    }

    #[test]
    fn the_less_loaded_comet_comes_first_at_equal_weight() {
        let list = [inst("a", "10", "900"), inst("b", "10", "100")];
        let order: Vec<_> = weighted(&list, "", 1.6)
            .iter()
            .map(|i| i.hostname.as_str())
            .collect();
        assert_eq!(order, ["b", "a"]);
    }

    #[test]
    fn offline_and_weightless_comets_are_left_out() {
        let mut off = inst("off", "10", "0");
        off.metadata.insert("offline".into(), "true".into());
        let list = [off, inst("zero", "0", "0"), inst("ok", "1", "0")];
        let order: Vec<_> = weighted(&list, "", 1.6)
            .iter()
            .map(|i| i.hostname.as_str())
            .collect();
        assert_eq!(order, ["ok"]);
    }
}
