"""`zesty bench`: measure zesty against an out-of-box baseline, peers and its own ablation."""
