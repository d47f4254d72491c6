"""Hub ids of the checkpoints the platform uses by default, in one place (numpy-free: the CLI reads it at start)."""

DPT = "Intel/dpt-large"  # relative inverse depth, LDM3D's own depth labels (depth estimation, rFID)
ZOEDEPTH = "Intel/zoedepth-nyu"  # metric depth, the paper's §4.3 reference
DEPTH_HUB_IDS = {"dpt": DPT, "zoedepth": ZOEDEPTH}  # by checkpoint model_type
