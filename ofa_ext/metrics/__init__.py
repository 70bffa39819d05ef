"""Pure metric maths: IoU / Acc@0.5, Fisher information, task similarity."""
