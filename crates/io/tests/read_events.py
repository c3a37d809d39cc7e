"""Read a TensorBoard log directory with TensorBoard's own EventAccumulator and print what it
found as JSON, so the Rust test can compare it with what it wrote.

Usage: read_events.py LOGDIR
Output: {"scalars": {tag: [[step, value], ...]},
         "histograms": {tag: [{"step", "min", "max", "num", "sum", "sum_squares",
                                "bucket_limit", "bucket"}, ...]}}
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    # size_guidance 0 = keep everything (the default samples scalars down to 10 000).
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "histograms": {}}
    for tag in tags["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags["histograms"]:
        out["histograms"][tag] = [
            {
                "step": e.step,
                "min": e.histogram_value.min,
                "max": e.histogram_value.max,
                "num": e.histogram_value.num,
                "sum": e.histogram_value.sum,
                "sum_squares": e.histogram_value.sum_squares,
                "bucket_limit": list(e.histogram_value.bucket_limit),
                "bucket": list(e.histogram_value.bucket),
            }
            for e in acc.Histograms(tag)
        ]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
