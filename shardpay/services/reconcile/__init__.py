"""Reconciliation: every day, the ledger proved against what the PSP says really happened.

Each line of the PSP's settlement file and each record shardpay made final that UTC day end in one category
(``shardpay.domain.settlement.CATEGORIES``). What the PSP settled and shardpay never finished is completed
through the normal finishing step (``fix``); each settled line's fee is booked once; the run, its figures and
its records that need a person are stored in the control database. ``run`` is one run, ``report`` its report,
``daily`` the scheduler, ``staging`` and ``source`` how the file gets in.
"""
