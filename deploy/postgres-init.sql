-- Run once by the postgres image on an empty volume (docker-compose.yml): selfheal's own
-- database and role, beside Temporal's.
CREATE ROLE selfheal LOGIN PASSWORD 'selfheal';
CREATE DATABASE selfheal OWNER selfheal;
