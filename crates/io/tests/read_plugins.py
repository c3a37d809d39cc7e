"""Serve a log directory with TensorBoard's own WSGI application and its real hparams and
custom_scalars plugins, query their HTTP API as the dashboards do, and print what came back as
JSON, so the Rust test can compare it with what it wrote.

Two data providers are asked, since `tensorboard --logdir` uses either: the Python event
multiplexer (`--load_fast=false`) and the Rust data server (`--load_fast=true`, the default
where the `tensorboard-data-server` package is installed, as it is with `pip install
tensorboard` on Linux x86-64).

Usage: read_plugins.py LOGDIR RUN REGEX
  RUN, REGEX: a run and a chart regex to fetch through the custom scalars /scalars route.
Output: {"multiplexer": ANSWERS, "data_server": ANSWERS, "raw_experiment": {...}} where
  ANSWERS = {"plugins", "experiment", "session_groups", "layout", "scalars"}.
"""
import json
import sys
import time

from google.protobuf import json_format
from tensorboard import default, program
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from werkzeug.test import Client

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def query(flags, provider, mux, run, regex):
    """Ask the plugins' HTTP routes what the dashboards ask."""
    app = application.TensorBoardWSGIApp(
        flags, default.get_plugins(), provider, deprecated_multiplexer=mux
    )
    client = Client(app)

    def check(r, path):
        assert r.status_code == 200, (path, r.status_code, r.get_data(as_text=True))
        return json.loads(r.get_data(as_text=True))

    def get(path, **query):
        return check(client.get(path, query_string=query), path)

    def post(path, body):
        r = client.post(path, data=json.dumps(body), content_type="application/json")
        return check(r, path)

    listing = get("/data/plugins_listing")
    experiment = post("/data/plugin/hparams/experiment", {"experimentName": ""})
    cols = [{"hparam": h["name"]} for h in experiment.get("hparamInfos", [])]
    cols += [{"metric": m["name"]} for m in experiment.get("metricInfos", [])]
    groups = post(
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": STATUSES,
            "colParams": cols,
            "startIndex": 0,
            "sliceSize": 1000,
        },
    )
    return {
        "plugins": {k: v["enabled"] for k, v in listing.items()},
        "experiment": experiment,
        "session_groups": groups,
        "layout": get("/data/plugin/custom_scalars/layout"),
        "scalars": get("/data/plugin/custom_scalars/scalars", run=run, tag=regex),
    }


def with_multiplexer(logdir, run, regex):
    tb = program.TensorBoard(default.get_plugins())
    tb.configure(logdir=logdir, load_fast="false")
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    answers = query(tb.flags, provider, mux, run, regex)
    # The experiment's plugin content parsed by the plugin's own protobuf module.
    raw = None
    for r, tags in mux.PluginRunToTagToContent(hparams_metadata.PLUGIN_NAME).items():
        if hparams_metadata.EXPERIMENT_TAG in tags:
            data = plugin_data_pb2.HParamsPluginData.FromString(
                tags[hparams_metadata.EXPERIMENT_TAG]
            )
            raw = {
                "run": r,
                "version": data.version,
                "experiment": json_format.MessageToDict(data.experiment),
            }
    return answers, raw


def with_data_server(logdir, run, regex, sessions):
    """The data server loads in the background: poll until every session is there."""
    tb = program.TensorBoard(default.get_plugins())
    tb.configure(logdir=logdir, load_fast="true", reload_interval=1)
    # How `tensorboard` itself builds its provider (program.TensorBoard._make_server).
    provider, mux = tb._make_data_provider()
    deadline = time.time() + 60
    while True:
        answers = query(tb.flags, provider, mux, run, regex)
        complete = (
            len(answers["session_groups"].get("sessionGroups", [])) == sessions
            and answers["layout"].get("category")
            and answers["scalars"].get("tag_to_events")
        )
        if complete or time.time() > deadline:
            return answers
        time.sleep(0.5)


def main():
    logdir, run, regex = sys.argv[1:4]
    answers, raw = with_multiplexer(logdir, run, regex)
    sessions = len(answers["session_groups"].get("sessionGroups", []))
    json.dump(
        {
            "multiplexer": answers,
            "data_server": with_data_server(logdir, run, regex, sessions),
            "raw_experiment": raw,
        },
        sys.stdout,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
