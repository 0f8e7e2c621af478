"""The seed's own SageMaker Python SDK v2 code works with our image: MultiDataModel deploy / add_model /
list_models against moto's server, then Predictor.predict(target_model=...) against `mme-local serve` on the
same S3 prefix.
(sagemaker==2.257.7 installs beside our pins in the dev extra: no separate venv needed.)"""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest
from sagemaker.deserializers import JSONDeserializer
from sagemaker.multidatamodel import MultiDataModel
from sagemaker.predictor import Predictor
from sagemaker.serializers import CSVSerializer
from sagemaker.session import Session

from sklearn_mme.container import examples
from sklearn_mme.harness.packaging import package
from tests.deploy.conftest import IMAGE, REGION, ROLE
from tests.harness_process import runtime_client, start_harness, stop_harness

BUCKET = "sdk-models"
PREFIX = f"s3://{BUCKET}/mme/"


@pytest.mark.mms
def test_multidatamodel_deploy_add_list_then_predict(
    aws: dict, aws_env: str, trained: dict[str, examples.Example], tmp_path: Path
) -> None:
    aws["s3"].create_bucket(Bucket=BUCKET)
    session = Session(boto_session=boto3.Session(region_name=REGION))
    mdm = MultiDataModel(name="sdk-mme", model_data_prefix=PREFIX, image_uri=IMAGE, role=ROLE,
                         sagemaker_session=session)
    mdm.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="sdk-mme", wait=True)

    sm = aws["sagemaker"]
    assert sm.describe_endpoint(EndpointName="sdk-mme")["EndpointStatus"] == "InService"
    model = sm.describe_model(ModelName="sdk-mme")["PrimaryContainer"]
    assert (model["Image"], model["Mode"], model["ModelDataUrl"]) == (IMAGE, "MultiModel", PREFIX)

    names = ["iris_logreg", "diabetes_ridge"]
    for name in names:
        model_dir = examples.write_model_dir(trained[name], tmp_path / "src")
        archive = package(model_dir, tmp_path / f"{name}.tar.gz")
        mdm.add_model(model_data_source=str(archive), model_data_path=f"{name}.tar.gz")
    assert sorted(mdm.list_models()) == sorted(f"{n}.tar.gz" for n in names)

    harness = start_harness(tmp_path, PREFIX, store_args=["--s3-endpoint-url", aws_env])
    try:
        predictor = Predictor(
            "sdk-mme",
            sagemaker_session=Session(boto_session=boto3.Session(region_name=REGION),
                                      sagemaker_runtime_client=runtime_client(harness.url)),
            serializer=CSVSerializer(),
            deserializer=JSONDeserializer(),
        )
        for name in names:
            ex = trained[name]
            got = predictor.predict(ex.X[:5], target_model=f"{name}.tar.gz")
            np.testing.assert_allclose(np.asarray(got["predictions"], dtype=float),
                                       np.asarray(ex.model.predict(ex.X[:5]), dtype=float), rtol=1e-6)
    finally:
        stop_harness(harness)
