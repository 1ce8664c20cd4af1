// Run once by the mongo image on first start (/docker-entrypoint-initdb.d, as root): creates the
// trainer's role from trainer-role.json, with each privilege on MONGODB_DB, and its user. The
// password comes from the container's environment, never from a command line.
const fs = require("fs");
const spec = JSON.parse(fs.readFileSync("/docker-entrypoint-initdb.d/trainer-role.json", "utf8"));
const dbName = process.env.MONGODB_DB || "edu_ranker_db";
const privileges = spec.privileges.map((p) => ({
  resource: { db: dbName, collection: p.resource.collection },
  actions: p.actions,
}));
const admin = db.getSiblingDB("admin");
admin.createRole({ role: spec.role, privileges: privileges, roles: [] });
admin.createUser({
  user: process.env.MONGO_TRAINER_USER,
  pwd: process.env.MONGO_TRAINER_PASSWORD,
  roles: [{ role: spec.role, db: "admin" }],
});
