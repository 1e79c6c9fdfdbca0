"""What each task adds to the shared loop: its metric (detection: mAP) and, in time, its data, loss and checks."""
