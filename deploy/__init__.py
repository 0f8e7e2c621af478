"""`mme-deploy`: deploy, autoscale and monitor the MME image on SageMaker (client-side; not in the image)."""
