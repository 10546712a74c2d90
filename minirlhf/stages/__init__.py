"""Floor 5, the stages: one algorithm per file (pure losses and estimators first, then its config,
result and ``train_x(config)``). A stage never imports another stage; what two stages share
lives on a lower floor. The registry that lists them is ``minirlhf.registry``."""
