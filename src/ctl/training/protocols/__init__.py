"""One module per protocol kind; :func:`ctl.training.protocol.run_train` dispatches on ``model.protocol``."""
