"""Tests of the sagemaker provider against the SageMaker emulator (moto server)."""
