from iterable_recipes.cli.deployments import available, read_deployments, to_runner_deployment
from iterable_recipes.cli.serve import served_names
from iterable_recipes.settings import Settings
from iterable_recipes.sync.definitions import all_sync_definitions


def test_prefect_yaml_declares_the_drains_the_poll_and_one_deployment_per_sync():
    specs = {s.name: s for s in read_deployments()}
    assert specs["customersdot-drain"].concurrency_limit is None
    assert specs["marketo-opt-out-drain"].concurrency_limit is None
    assert specs["marketo-unsubscribe-poll"].concurrency_limit == 1
    for name in all_sync_definitions():
        spec = specs[f"snowflake-sync-{name.replace('_', '-')}"]
        assert spec.parameters == {"sync": name}
        assert spec.concurrency_limit == 1
    for spec in specs.values():
        assert spec.schedules and all(s["timezone"] == "UTC" for s in spec.schedules), spec.name


def test_the_receiver_nudges_deployments_that_prefect_yaml_declares():
    # The receiver creates runs by "flow/deployment" name from settings; both must exist in the file.
    names = served_names()
    defaults = Settings(_env_file=None)
    assert defaults.customersdot_drain_deployment in names
    assert defaults.optout_drain_deployment in names


def test_served_deployments_carry_the_file_schedules_parameters_and_limits():
    built = {d.name: d for d in (to_runner_deployment(s) for s in read_deployments() if available(s))}
    drain = built["customersdot-drain"]
    assert drain.concurrency_limit is None
    assert [(s.schedule.cron, s.schedule.timezone) for s in drain.schedules] == [("* * * * *", "UTC")]
    poll = built["marketo-unsubscribe-poll"]
    assert poll.concurrency_limit == 1
    assert poll.concurrency_options.collision_strategy == "CANCEL_NEW"
    sync = built["snowflake-sync-gitlab-marketing-contacts"]
    assert sync.parameters == {"sync": "gitlab_marketing_contacts"}
    assert sync.entrypoint == "flows/snowflake_sync.py:snowflake_sync"
    assert [s.schedule.cron for s in sync.schedules] == ["0 6 * * *"]
