//! TensorBoard's HParams dashboard: one row per training run with its hyperparameters and
//! final metrics, so a sweep can be sorted, filtered and plotted by recipe, learning rate, seed.
//!
//! The plugin reads three tensor summaries whose metadata names the plugin `"hparams"` and
//! whose content is a serialized `HParamsPluginData` (tensorboard/plugins/hparams/
//! plugin_data.proto and api.proto; the field numbers below are copied from them):
//!
//! - [`EXPERIMENT_TAG`], once, anywhere in the log directory (we write it at the sweep root):
//!   the hyperparameters with their domains and the metrics to show;
//! - [`SESSION_START_TAG`] in each run directory: that run's hyperparameter values;
//! - [`SESSION_END_TAG`] in each run directory: its status.
//!
//! A metric is a scalar time series, named by a tag and a *group* (a subdirectory of the run,
//! `""` for the run itself); the dashboard shows its last value. [`sweep_run_summaries`] writes
//! the fp8 sweep metrics as scalars next to the session summaries, under [`METRIC_PREFIX`].

use super::{summary, write_event_file, Summary, TensorProto};
use prost::Message;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// `metadata.PLUGIN_NAME`.
pub const PLUGIN_NAME: &str = "hparams";
/// `metadata.PLUGIN_DATA_VERSION`: readers refuse any other.
pub const PLUGIN_DATA_VERSION: i32 = 0;
/// Tag of the experiment summary.
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of a session's start summary (its hyperparameters).
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of a session's end summary (its status).
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// `tensorboard.hparams.HParamsPluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(oneof = "plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<plugin_data::Data>,
}

/// Nested types of [`HParamsPluginData`].
pub mod plugin_data {
    /// `HParamsPluginData.data`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`.
#[derive(Clone, PartialEq, Message)]
pub struct Experiment {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
    #[prost(string, tag = "6")]
    pub name: String,
}

/// `tensorboard.hparams.HParamInfo`, with the discrete domain only (sweeps are grids).
#[derive(Clone, PartialEq, Message)]
pub struct HParamInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    /// A [`DataType`].
    #[prost(int32, tag = "4")]
    pub r#type: i32,
    /// `oneof domain { ListValue domain_discrete = 5; Interval domain_interval = 6; }`.
    #[prost(message, optional, tag = "5")]
    pub domain_discrete: Option<ListValue>,
}

/// `tensorboard.hparams.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    Unset = 0,
    String = 1,
    Bool = 2,
    Float64 = 3,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    #[prost(string, tag = "3")]
    pub display_name: String,
    #[prost(string, tag = "4")]
    pub description: String,
    /// `DatasetType`; 0 = unknown.
    #[prost(int32, tag = "5")]
    pub dataset_type: i32,
}

/// `tensorboard.hparams.MetricName`: the scalar series `tag` of run subdirectory `group`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricName {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, Value>,
    #[prost(string, tag = "2")]
    pub model_uri: String,
    #[prost(string, tag = "3")]
    pub monitor_url: String,
    /// Sessions with the same group name are aggregated; empty: the run is its own group.
    #[prost(string, tag = "4")]
    pub group_name: String,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct SessionEndInfo {
    /// A [`Status`].
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `tensorboard.hparams.Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    Unknown = 0,
    Success = 1,
    Failure = 2,
    Running = 3,
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

/// `google.protobuf.Value`, reduced to numbers, strings and booleans.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "2, 3, 4")]
    pub kind: Option<value::Kind>,
}

/// Nested types of [`Value`].
pub mod value {
    /// `Value.kind`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(double, tag = "2")]
        NumberValue(f64),
        #[prost(string, tag = "3")]
        StringValue(String),
        #[prost(bool, tag = "4")]
        BoolValue(bool),
    }
}

/// A hyperparameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl HParam {
    fn to_value(&self) -> Value {
        Value {
            kind: Some(match self {
                HParam::Str(s) => value::Kind::StringValue(s.clone()),
                HParam::Num(x) => value::Kind::NumberValue(*x),
                HParam::Bool(b) => value::Kind::BoolValue(*b),
            }),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            HParam::Str(_) => DataType::String,
            HParam::Num(_) => DataType::Float64,
            HParam::Bool(_) => DataType::Bool,
        }
    }
}

/// A metric shown as a column: the last value of scalar `tag` in each run.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub tag: String,
    pub display_name: String,
    pub description: String,
}

/// The summary holding `data` under `tag`, as the hparams plugin's own writer builds it.
fn plugin_summary(tag: &str, data: plugin_data::Data) -> Summary {
    let content = HParamsPluginData {
        version: PLUGIN_DATA_VERSION,
        data: Some(data),
    }
    .encode_to_vec();
    Summary {
        value: vec![summary::Value::plugin(
            tag,
            PLUGIN_NAME,
            content,
            TensorProto::empty_float(),
        )],
    }
}

/// The experiment summary: hyperparameters (name, description and the values the sweep
/// takes, in order; the type is that of the first value) and metrics.
pub fn experiment_summary(
    description: &str,
    hparams: &[(String, String, Vec<HParam>)],
    metrics: &[Metric],
    time_created_secs: f64,
) -> Summary {
    let hparam_infos = hparams
        .iter()
        .map(|(name, desc, values)| HParamInfo {
            name: name.clone(),
            display_name: name.clone(),
            description: desc.clone(),
            r#type: values.first().map_or(DataType::Unset, HParam::data_type) as i32,
            domain_discrete: Some(ListValue {
                values: values.iter().map(HParam::to_value).collect(),
            }),
        })
        .collect();
    let metric_infos = metrics
        .iter()
        .map(|m| MetricInfo {
            name: Some(MetricName {
                group: String::new(),
                tag: m.tag.clone(),
            }),
            display_name: m.display_name.clone(),
            description: m.description.clone(),
            dataset_type: 0,
        })
        .collect();
    plugin_summary(
        EXPERIMENT_TAG,
        plugin_data::Data::Experiment(Experiment {
            description: description.to_string(),
            user: String::new(),
            time_created_secs,
            hparam_infos,
            metric_infos,
            name: String::new(),
        }),
    )
}

/// A session's start summary: its hyperparameter values.
pub fn session_start_summary(hparams: &[(String, HParam)], start_time_secs: f64) -> Summary {
    plugin_summary(
        SESSION_START_TAG,
        plugin_data::Data::SessionStartInfo(SessionStartInfo {
            hparams: hparams
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value()))
                .collect(),
            model_uri: String::new(),
            monitor_url: String::new(),
            group_name: String::new(),
            start_time_secs,
        }),
    )
}

/// A session's end summary.
pub fn session_end_summary(status: Status, end_time_secs: f64) -> Summary {
    plugin_summary(
        SESSION_END_TAG,
        plugin_data::Data::SessionEndInfo(SessionEndInfo {
            status: status as i32,
            end_time_secs,
        }),
    )
}

/// Prefix of the metric scalars [`sweep_run_summaries`] writes.
pub const METRIC_PREFIX: &str = "hparams/";

/// One finished run of a sweep: what the HParams dashboard shows about it.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRun {
    /// The run's directory relative to the sweep root (where its TensorBoard events are).
    pub run_dir: String,
    pub recipe: String,
    /// The recipe's element format (e.g. `float8_e4m3fn`, `e8m3`); `"-"` when it has none.
    pub format: String,
    pub lr: f64,
    pub seed: u64,
    pub model: String,
    pub data: String,
    pub final_loss: f64,
    pub best_loss: f64,
    pub diverged: bool,
    pub spike_count: u64,
    /// `None` when sharpness was not measured; the metric is then left out.
    pub max_sharpness: Option<f64>,
    /// Training steps run; the step at which the metrics are logged.
    pub steps: u64,
}

/// The hyperparameters of a sweep run, in column order.
pub const SWEEP_HPARAMS: [&str; 6] = ["recipe", "format", "lr", "seed", "model", "data"];

/// The metrics of a sweep run: (name under [`METRIC_PREFIX`], description).
pub const SWEEP_METRICS: [(&str, &str); 5] = [
    ("final_loss", "training loss at the last step"),
    ("best_loss", "lowest training loss"),
    (
        "diverged",
        "outcome: 1 if the run diverged, 0 if it converged",
    ),
    ("spike_count", "number of loss spikes"),
    ("max_sharpness", "largest logit sharpness measured"),
];

impl SweepRun {
    fn hparams(&self) -> [(String, HParam); 6] {
        let s = |k: &str, v: &str| (k.to_string(), HParam::Str(v.to_string()));
        [
            s("recipe", &self.recipe),
            s("format", &self.format),
            ("lr".into(), HParam::Num(self.lr)),
            ("seed".into(), HParam::Num(self.seed as f64)),
            s("model", &self.model),
            s("data", &self.data),
        ]
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut m = vec![
            ("final_loss", self.final_loss),
            ("best_loss", self.best_loss),
            ("diverged", if self.diverged { 1.0 } else { 0.0 }),
            ("spike_count", self.spike_count as f64),
        ];
        if let Some(s) = self.max_sharpness {
            m.push(("max_sharpness", s));
        }
        m
    }
}

/// The summaries of one run's session: start (hyperparameters), the metric scalars at the
/// run's last step, and end (status `Success` for a converged run, `Failure` for a diverged
/// one, so the dashboard's status filter separates them).
pub fn sweep_run_summaries(run: &SweepRun, time_secs: f64) -> Vec<(i64, Summary)> {
    let step = i64::try_from(run.steps).unwrap_or(i64::MAX);
    let metrics = Summary {
        value: run
            .metrics()
            .into_iter()
            .map(|(k, v)| summary::Value::scalar(&format!("{METRIC_PREFIX}{k}"), v as f32))
            .collect(),
    };
    let status = if run.diverged {
        Status::Failure
    } else {
        Status::Success
    };
    vec![
        (0, session_start_summary(&run.hparams(), time_secs)),
        (step, metrics),
        (step, session_end_summary(status, time_secs)),
    ]
}

/// The experiment summary of a sweep: its hyperparameters with the values its runs take
/// (sorted, distinct) and its metrics.
pub fn sweep_experiment_summary(description: &str, runs: &[SweepRun], time_secs: f64) -> Summary {
    let mut columns: Vec<(String, String, Vec<HParam>)> = Vec::new();
    for (i, name) in SWEEP_HPARAMS.iter().enumerate() {
        let mut values: Vec<HParam> = runs.iter().map(|r| r.hparams()[i].1.clone()).collect();
        values.sort_by(|a, b| match (a, b) {
            (HParam::Num(x), HParam::Num(y)) => x.total_cmp(y),
            (HParam::Str(x), HParam::Str(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
        values.dedup();
        columns.push((name.to_string(), String::new(), values));
    }
    let metrics: Vec<Metric> = SWEEP_METRICS
        .iter()
        .map(|(k, d)| Metric {
            tag: format!("{METRIC_PREFIX}{k}"),
            display_name: k.to_string(),
            description: d.to_string(),
        })
        .collect();
    experiment_summary(description, &columns, &metrics, time_secs)
}

/// Name of the event file holding the hparams summaries of a directory. Fixed, so rewriting it
/// (a resumed sweep) replaces it instead of adding a second copy. It sorts after the training
/// events' `events.out.tfevents.<secs>...` names (until the year 2286), because TensorBoard's
/// Python loader, while running, only looks for files that sort after the one it is reading.
pub const EVENT_FILE: &str = "events.out.tfevents.9999999999.fp8-hparams";

/// Write the HParams summaries of a sweep: the experiment at `root`, and each run's session in
/// `root/<run_dir>` (next to its training events). Rewrites its own files only; call it again
/// whenever more runs have finished.
pub fn write_sweep(root: &Path, description: &str, runs: &[SweepRun]) -> io::Result<()> {
    let now = super::now();
    write_event_file(
        root.join(EVENT_FILE),
        &[(0, sweep_experiment_summary(description, runs, now))],
    )?;
    for run in runs {
        write_event_file(
            root.join(&run.run_dir).join(EVENT_FILE),
            &sweep_run_summaries(run, now),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::{event, read_events, summary::value::Value as V};

    fn run(dir: &str, lr: f64, diverged: bool) -> SweepRun {
        SweepRun {
            run_dir: dir.into(),
            recipe: "bit_reduction_e8m3".into(),
            format: "e8m3".into(),
            lr,
            seed: 2,
            model: "gpt2-mini".into(),
            data: "synthetic".into(),
            final_loss: 3.5,
            best_loss: 3.25,
            diverged,
            spike_count: 4,
            max_sharpness: None,
            steps: 100,
        }
    }

    fn plugin_data(s: &Summary) -> HParamsPluginData {
        let m = s.value[0].metadata.as_ref().unwrap();
        let p = m.plugin_data.as_ref().unwrap();
        assert_eq!(p.plugin_name, "hparams");
        assert_eq!(m.data_class, crate::tensorboard::DATA_CLASS_TENSOR);
        HParamsPluginData::decode(p.content.as_slice()).unwrap()
    }

    #[test]
    fn session_start_encodes_the_hparams_map_by_hand() {
        let s = session_start_summary(&[("lr".into(), HParam::Num(0.5))], 0.0);
        let Some(V::Tensor(t)) = &s.value[0].value else {
            panic!("no tensor")
        };
        assert_eq!(t, &TensorProto::empty_float());
        let content = &s.value[0]
            .metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap()
            .content;
        // HParamsPluginData { session_start_info (field 3) { hparams (field 1, a map entry:
        // key = 1, value = 2) { "lr": Value { number_value (field 2, double) 0.5 } } } }.
        let value = [&[0x11u8][..], &0.5f64.to_le_bytes()].concat(); // field 2, wire type 1
        let entry = [&[0x0a, 2, b'l', b'r', 0x12, value.len() as u8][..], &value].concat();
        let start = [&[0x0a, entry.len() as u8][..], &entry].concat();
        let want = [&[0x1a, start.len() as u8][..], &start].concat(); // version 0 omitted
        assert_eq!(content, &want);
    }

    #[test]
    fn sweep_summaries_round_trip() {
        let runs = [run("runs/a", 1e-3, false), run("runs/b", 3e-4, true)];
        let e = plugin_data(&sweep_experiment_summary("d", &runs, 1.0));
        let Some(plugin_data::Data::Experiment(e)) = e.data else {
            panic!("not an experiment")
        };
        assert_eq!(e.description, "d");
        let names: Vec<&str> = e.hparam_infos.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, SWEEP_HPARAMS);
        let lr = &e.hparam_infos[2];
        assert_eq!(lr.r#type, DataType::Float64 as i32);
        let lrs: Vec<_> = lr.domain_discrete.as_ref().unwrap().values.clone();
        assert_eq!(
            lrs,
            vec![HParam::Num(3e-4).to_value(), HParam::Num(1e-3).to_value()]
        );
        assert_eq!(
            e.hparam_infos[0]
                .domain_discrete
                .as_ref()
                .unwrap()
                .values
                .len(),
            1
        );
        assert_eq!(e.metric_infos.len(), SWEEP_METRICS.len());
        assert_eq!(
            e.metric_infos[0].name.as_ref().unwrap().tag,
            "hparams/final_loss"
        );

        let s = sweep_run_summaries(&runs[1], 1.0);
        assert_eq!(s.len(), 3);
        let Some(plugin_data::Data::SessionEndInfo(end)) = plugin_data(&s[2].1).data else {
            panic!("not an end")
        };
        assert_eq!(end.status, Status::Failure as i32);
        let metrics: Vec<(&str, Option<V>)> = s[1]
            .1
            .value
            .iter()
            .map(|v| (v.tag.as_str(), v.value.clone()))
            .collect();
        assert_eq!(
            metrics,
            vec![
                ("hparams/final_loss", Some(V::SimpleValue(3.5))),
                ("hparams/best_loss", Some(V::SimpleValue(3.25))),
                ("hparams/diverged", Some(V::SimpleValue(1.0))),
                ("hparams/spike_count", Some(V::SimpleValue(4.0))),
            ]
        );
        assert_eq!(s[1].0, 100);
    }

    #[test]
    fn our_files_sort_after_training_event_files() {
        let training = "events.out.tfevents.1764582000.host.4242.0";
        assert!(EVENT_FILE > training);
        assert!(crate::tensorboard::custom_scalars::EVENT_FILE > training);
        assert!(EVENT_FILE.contains("tfevents")); // what TensorBoard looks for
    }

    #[test]
    fn write_sweep_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let runs = [run("runs/a", 1e-3, false)];
        write_sweep(dir.path(), "", &runs).unwrap();
        write_sweep(dir.path(), "", &runs).unwrap();
        let files = |p: &Path| std::fs::read_dir(p).unwrap().count();
        assert_eq!(files(dir.path()), 2); // the event file and runs/
        assert_eq!(files(&dir.path().join("runs/a")), 1);
        let ev = read_events(dir.path().join("runs/a").join(EVENT_FILE)).unwrap();
        assert_eq!(ev.len(), 4);
        assert!(matches!(ev[0].what, Some(event::What::FileVersion(_))));
    }
}
