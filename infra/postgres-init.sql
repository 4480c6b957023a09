-- One Postgres for both servers: MLflow's database is created by POSTGRES_DB, Prefect's here.
CREATE DATABASE prefect;
