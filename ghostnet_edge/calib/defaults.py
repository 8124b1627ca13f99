"""How many images INT8 calibration and the held-out checks use by default (standard library only: the
CLI and the export's config read these without importing NumPy)."""

DEFAULT_NUM_CALIB = 256   # calibration images drawn (ranges settle by ~128 on the references; 256 leaves margin)
DEFAULT_NUM_VERIFY = 32   # held-out images every artifact is checked on
