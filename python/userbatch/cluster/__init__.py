"""Where runs execute: the runners (local, standalone, YARN, Kubernetes) behind one registry, the quota file
rendered for each cluster scheduler (YARN CapacityScheduler, YuniKorn, Kubernetes quotas, Slurm accounts and
sbatch), the names they share, and the development cluster on this machine.

The facility (:mod:`userbatch.facility`) decides *whether* and *when* a run starts; this package decides *how*
and *where*. It reads the facility's typed quota file (:mod:`userbatch.facility.config`), the OS identity of a run
(:mod:`userbatch.facility.accounts`) and its launch wrapper (:mod:`userbatch.facility.isolation`) — three leaf
modules of the facility — and nothing else of it.

Modules: :mod:`.base` (``SubmitSpec``, ``Runner``), :mod:`.registry` (``runner_for``), :mod:`.local`,
:mod:`.standalone`, :mod:`.yarn`, :mod:`.kubernetes`, :mod:`.slurm`, :mod:`.quotas` (what every rendering shares),
:mod:`.naming`, :mod:`.render` (every target by name), :mod:`.dev` (``userbatch cluster`` / ``userbatch connect``).
"""
