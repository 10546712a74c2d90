"""Every objective of the course, as pure functions of log-probs, rewards and masks: one file
per family. Stages hold the loops; the losses and estimators they minimise live here.

- ``sft``: next-token and response-only likelihood (pretraining, SFT);
- ``reward``: Bradley-Terry, Plackett-Luce and all-pairs losses of a reward model;
- ``ppo``: KL estimators (k1, k2, k3), whitening, GAE, the clipped policy and value losses, the
  adaptive KL controller;
- ``group``: group baselines (GRPO, Dr. GRPO, RLOO, REINFORCE++, ReMax), the clipped
  per-token surrogate with clip-higher (PPO's is its epsilon_high = epsilon case), loss
  aggregation;
- ``preference``: DPO, IPO, cDPO, hinge, KTO, ORPO, SimPO.

This floor imports only ``autograd`` and ``lm``.
"""
