"""Where the files that ship inside the package are: the demo model, its sample timelapse, the catalog."""

from pathlib import Path

BUNDLED_DATA = Path(__file__).resolve().parent / "data"
BUNDLED_MODEL = BUNDLED_DATA / "print3d_guidance.tflite"
SAMPLE_TIMELAPSE = BUNDLED_DATA / "sample_timelapse"
SAMPLE_TRUTH = BUNDLED_DATA / "sample_timelapse_truth.json"
