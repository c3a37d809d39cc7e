//! TensorBoard's Custom Scalars dashboard: charts that overlay several scalar series.
//!
//! Training logs `precision/<site>/<role>/<stat>` for every GEMM site, which the plain scalars
//! dashboard shows as hundreds of separate charts. [`precision_layout`] groups them instead:
//! one category per layer (`h.3`, `lm_head`), one chart per role and statistic, whose lines
//! are that layer's sites. [`inspection_layout`] does the same for the TransformerEngine-style
//! statistics of `--inspect` and `--counterfactual` (`inspect/<site>/<role>/<stat>` and
//! `counterfactual/<recipe>/<site>/<role>/<stat>`), with the active recipe's and every
//! counterfactual recipe's lines in the same chart.
//!
//! The layout is a `tensorboard.Layout` (tensorboard/plugins/custom_scalar/layout.proto; field
//! numbers copied from it), serialized into a scalar string tensor under
//! [`CONFIG_TAG`] with plugin name `"custom_scalars"`. A chart's tags are Python regular
//! expressions matched (`re.match`) against every tag of every run.

use super::{summary, write_event_file, Summary, TensorProto};
use prost::Message;
use std::io;
use std::path::Path;

/// `metadata.PLUGIN_NAME`.
pub const PLUGIN_NAME: &str = "custom_scalars";
/// `metadata.CONFIG_SUMMARY_TAG`.
pub const CONFIG_TAG: &str = "custom_scalars__config__";

/// `tensorboard.Layout`.
#[derive(Clone, PartialEq, Message)]
pub struct Layout {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, repeated, tag = "2")]
    pub category: Vec<Category>,
}

/// `tensorboard.Category`: a collapsible group of charts.
#[derive(Clone, PartialEq, Message)]
pub struct Category {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(message, repeated, tag = "2")]
    pub chart: Vec<Chart>,
    /// Collapsed when the dashboard opens.
    #[prost(bool, tag = "3")]
    pub closed: bool,
}

/// `tensorboard.Chart`, multiline content only.
#[derive(Clone, PartialEq, Message)]
pub struct Chart {
    #[prost(string, tag = "1")]
    pub title: String,
    /// `oneof content { MultilineChartContent multiline = 2; MarginChartContent margin = 3; }`.
    #[prost(message, optional, tag = "2")]
    pub multiline: Option<MultilineChartContent>,
}

/// `tensorboard.MultilineChartContent`: every series whose tag matches one of the regexes.
#[derive(Clone, PartialEq, Message)]
pub struct MultilineChartContent {
    #[prost(string, repeated, tag = "1")]
    pub tag: Vec<String>,
}

/// The tensor roles of a GEMM site, as fp8-core's `Role` names them (fp8-train's tests check
/// that the two lists agree), in its order.
pub const ROLES: [&str; 9] = [
    "x", "w", "y", "dy", "dx", "dw", "x_wgrad", "w_dgrad", "dy_wgrad",
];
/// The per-role statistics training logs.
pub const STATS: [&str; 5] = ["amax", "scale", "underflow", "saturation", "snr_db"];
/// The statistics `--inspect` and `--counterfactual` log per site and role (fp8-train's tests
/// check them against what it writes).
pub const INSPECT_STATS: [&str; 7] = [
    "dynamic_range",
    "max_block_dynamic_range",
    "mse",
    "underflow_pct",
    "overflow_pct",
    "scale_inv_min",
    "scale_inv_max",
];

/// The layer a GEMM site belongs to: `h.<n>` for a block's sites (`h.3.attn.qkv` → `h.3`),
/// the site itself otherwise (`lm_head`).
pub fn layer_of(site: &str) -> &str {
    let mut parts = site.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some("h"), Some(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            &site[..2 + n.len()]
        }
        _ => site,
    }
}

/// One category per layer (in the order the sites first appear), each holding one chart per
/// role × statistic whose regex matches exactly `precision/<site>/<role>/<stat>` for the
/// layer's sites. Categories start collapsed: a 12-layer model has 13 of 30 charts each.
pub fn precision_layout(sites: &[impl AsRef<str>], roles: &[&str], stats: &[&str]) -> Layout {
    Layout {
        version: 0,
        category: layer_categories(sites, "precision", "precision", roles, stats),
    }
}

/// The categories `inspect <layer>`, as [`precision_layout`]'s, for the [`INSPECT_STATS`]: each
/// chart matches `inspect/<site>/<role>/<stat>` and `counterfactual/<any recipe>/<site>/…` for
/// the layer's sites, so the active recipe and its counterfactuals share a chart.
pub fn inspection_layout(sites: &[impl AsRef<str>], roles: &[&str]) -> Layout {
    Layout {
        version: 0,
        category: layer_categories(
            sites,
            "inspect",
            "(?:inspect|counterfactual/[^/]+)",
            roles,
            &INSPECT_STATS,
        ),
    }
}

/// One collapsed category `<title> <layer>` per layer, one chart per role × statistic whose
/// regex is `<prefix>/(?:<the layer's sites>)/<role>/<stat>$` (`prefix` is a regex itself).
fn layer_categories(
    sites: &[impl AsRef<str>],
    title: &str,
    prefix: &str,
    roles: &[&str],
    stats: &[&str],
) -> Vec<Category> {
    let mut layers: Vec<(&str, Vec<&str>)> = Vec::new();
    for site in sites.iter().map(AsRef::as_ref) {
        let layer = layer_of(site);
        match layers.iter_mut().find(|(l, _)| *l == layer) {
            Some((_, members)) => members.push(site),
            None => layers.push((layer, vec![site])),
        }
    }
    layers
        .into_iter()
        .map(|(layer, members)| {
            let alternatives = members
                .iter()
                .map(|s| regex_escape(s))
                .collect::<Vec<_>>()
                .join("|");
            let chart = roles
                .iter()
                .flat_map(|role| stats.iter().map(move |stat| (role, stat)))
                .map(|(role, stat)| Chart {
                    title: format!("{layer} {role} {stat}"),
                    multiline: Some(MultilineChartContent {
                        tag: vec![format!(
                            "{prefix}/(?:{alternatives})/{}/{}$",
                            regex_escape(role),
                            regex_escape(stat)
                        )],
                    }),
                })
                .collect();
            Category {
                title: format!("{title} {layer}"),
                chart,
                closed: true,
            }
        })
        .collect()
}

/// Escape every character that Python's `re` gives a meaning to.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The summary carrying `layout`.
pub fn layout_summary(layout: &Layout) -> Summary {
    Summary {
        value: vec![summary::Value::plugin(
            CONFIG_TAG,
            PLUGIN_NAME,
            Vec::new(),
            TensorProto::scalar_string(layout.encode_to_vec()),
        )],
    }
}

/// Name of the event file holding a directory's layout: fixed, so rewriting replaces it, and
/// sorting after training event files, like [`super::hparams::EVENT_FILE`].
pub const EVENT_FILE: &str = "events.out.tfevents.9999999999.fp8-layout";

/// Write `layout` to `dir` (a sweep root or a run directory), replacing an earlier one.
pub fn write_layout(dir: &Path, layout: &Layout) -> io::Result<()> {
    write_event_file(dir.join(EVENT_FILE), &[(0, layout_summary(layout))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_of_sites() {
        assert_eq!(layer_of("h.3.attn.qkv"), "h.3");
        assert_eq!(layer_of("h.11.mlp.fc"), "h.11");
        assert_eq!(layer_of("lm_head"), "lm_head");
        assert_eq!(layer_of("h.x.attn"), "h.x.attn");
        assert_eq!(layer_of("h."), "h.");
    }

    #[test]
    fn one_chart_per_role_and_stat_covers_the_layer() {
        let sites = ["h.0.attn.qkv", "h.0.mlp.fc", "h.1.attn.qkv", "lm_head"];
        let l = precision_layout(&sites, &["x", "dw"], &["amax"]);
        let titles: Vec<&str> = l.category.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            ["precision h.0", "precision h.1", "precision lm_head"]
        );
        let h0 = &l.category[0];
        assert_eq!(h0.chart.len(), 2);
        assert_eq!(h0.chart[1].title, "h.0 dw amax");
        assert_eq!(
            h0.chart[0].multiline.as_ref().unwrap().tag,
            [r"precision/(?:h\.0\.attn\.qkv|h\.0\.mlp\.fc)/x/amax$"]
        );
    }

    /// The inspection charts of a layer overlay the active recipe and every counterfactual
    /// (their recipe names are a path segment of their own).
    #[test]
    fn inspection_charts_hold_active_and_counterfactual_series() {
        let sites = ["h.0.attn.qkv", "h.0.mlp.fc", "lm_head"];
        let l = inspection_layout(&sites, &["x"]);
        let titles: Vec<&str> = l.category.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["inspect h.0", "inspect lm_head"]);
        assert_eq!(l.category[0].chart.len(), INSPECT_STATS.len());
        assert_eq!(l.category[0].chart[2].title, "h.0 x mse");
        assert_eq!(
            l.category[0].chart[2].multiline.as_ref().unwrap().tag,
            [r"(?:inspect|counterfactual/[^/]+)/(?:h\.0\.attn\.qkv|h\.0\.mlp\.fc)/x/mse$"]
        );
    }

    #[test]
    fn layout_is_a_scalar_string_tensor() {
        let l = precision_layout(&["lm_head"], &ROLES, &STATS);
        let s = layout_summary(&l);
        let Some(summary::value::Value::Tensor(t)) = &s.value[0].value else {
            panic!("no tensor")
        };
        assert_eq!(t.dtype, crate::tensorboard::DT_STRING);
        assert!(t.tensor_shape.as_ref().unwrap().dim.is_empty());
        assert_eq!(Layout::decode(t.string_val[0].as_slice()).unwrap(), l);
        assert_eq!(l.category[0].chart.len(), ROLES.len() * STATS.len());
    }
}
