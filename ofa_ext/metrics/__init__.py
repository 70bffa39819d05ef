"""Pure metric maths: IoU / Acc@0.5, Fisher information, task similarity, distances between point
clouds and datasets (L2 pairing, MMD, OTDD), k-means pseudo-labels, ORCA's alignment loss."""
