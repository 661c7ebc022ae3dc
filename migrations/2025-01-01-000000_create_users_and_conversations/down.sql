DROP TABLE conversations;
DROP TABLE users;
