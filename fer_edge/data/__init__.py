"""Data side: read labelled face images, split them, load them through the shared preprocessing, audit them.

    ds = open_dataset("faces/")                      # or fer2013.csv, CK+, JAFFE; None -> synthetic demo
    splits = make_splits(ds, val_fraction=0.1)        # own splits kept; val by subject when known
    x, y, skipped = load_arrays(splits["train"], spec, ds.labels)
    report = run_audit(ds)                            # report.warnings, report.render(console)

No TensorFlow here; OpenCV is imported inside the functions that decode.
"""

from fer_edge.data.audit import AuditReport, run_audit
from fer_edge.images import BadImageError, decode_image
from fer_edge.data.load import class_counts, load_arrays, skipped_summary
from fer_edge.data.readers import READERS, open_dataset
from fer_edge.data.splits import make_splits, report_split, subject_kfold
from fer_edge.data.synthetic import synthetic_set, write_synthetic_tree
from fer_edge.data.types import SPLIT_NAMES, LabelledSet, Sample, Skipped

__all__ = [
    "AuditReport", "BadImageError", "LabelledSet", "READERS", "SPLIT_NAMES", "Sample", "Skipped",
    "class_counts", "decode_image", "load_arrays", "make_splits", "open_dataset", "report_split",
    "run_audit", "skipped_summary", "subject_kfold", "synthetic_set", "write_synthetic_tree",
]
