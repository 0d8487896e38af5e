"""What every variant is judged against, each named once for the whole package."""

BASELINE = "softmax"  # exact attention through torch's fused kernel: speed, memory and accuracy are read against it
ACC_TOLERANCE_POINTS = 5.0  # test-accuracy points a recommended variant may lose to the baseline
