"""What every variant is judged against, each named once for the whole package."""

BASELINE = "softmax"  # exact attention through torch's fused kernel: speed, memory and accuracy are read against it
ACC_TOLERANCE_POINTS = 5.0  # test-accuracy points a recommended variant may lose to the baseline
LSTM_BASELINE = "lstm"  # the recurrence attention replaced: trained with --baseline lstm, timed with --layer
RECURRENT_BASELINE_FAMILY = "recurrent-baseline"  # the family column of the LSTM baseline's rows
