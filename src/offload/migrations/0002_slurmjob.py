"""The SLURM job type: a proxy of Job (no table change)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("offload", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SlurmJob",
            fields=[],
            options={
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("offload.job",),
        ),
    ]
