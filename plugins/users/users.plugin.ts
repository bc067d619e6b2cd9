import { asClass } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { UsersService } from './users.service.js';

/** Provides `userService`: users and their roles (API.md §3, §4). */
export const usersPlugin = definePlugin({
  name: 'users',
  dependsOn: ['storage'],
  register({ container }) {
    container.register({ userService: asClass(UsersService).singleton() });
  },
});
